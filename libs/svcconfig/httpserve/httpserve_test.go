package httpserve

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs New(h, opts...) on a loopback port until the test ends.
func serve(t *testing.T, h http.Handler, opts ...Option) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(h, opts...)
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// slowClient connects to addr and sends first, then then every 50 ms, until a write fails or
// the test ends. It returns the connection.
func slowClient(t *testing.T, addr, first, then string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); c.Close() })
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for part := first; ; part = then {
			if _, err := io.WriteString(c, part); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return c
}

// closedWithin reads c until the server closes it and reports how long that took; it fails the
// test if the server has not closed it within limit.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(c)
	took := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still held the connection after %v (read %q)", limit, got)
	}
	return took, string(got)
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	s := New(http.NotFoundHandler(), WithWriteTimeout(time.Minute), WithIdleTimeout(-1))
	if s.ReadHeaderTimeout != DefaultReadHeaderTimeout || s.ReadTimeout != DefaultReadTimeout ||
		s.WriteTimeout != time.Minute || s.IdleTimeout != DefaultIdleTimeout || s.MaxHeaderBytes != DefaultMaxHeaderBytes {
		t.Errorf("got header %v read %v write %v idle %v max header %d; want %v %v %v %v %d", s.ReadHeaderTimeout, s.ReadTimeout,
			s.WriteTimeout, s.IdleTimeout, s.MaxHeaderBytes, DefaultReadHeaderTimeout, DefaultReadTimeout, time.Minute,
			DefaultIdleTimeout, DefaultMaxHeaderBytes)
	}
}

// TestSlowlorisCutOff: a client that opens a connection and sends its headers a line at a time,
// never ending them, is disconnected once the header timeout passes, long before it would stop.
func TestSlowlorisCutOff(t *testing.T) {
	t.Parallel()
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		WithReadHeaderTimeout(300*time.Millisecond), WithReadTimeout(time.Second))
	c := slowClient(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n", "X-Slow: a\r\n")
	// The dribble would go on for ever; the server must end it within a few header timeouts.
	took, got := closedWithin(t, c, 10*time.Second)
	if strings.Contains(got, "200 OK") {
		t.Errorf("the slow request was served: %q", got)
	}
	t.Logf("slowloris connection closed after %v", took)

	// The server still serves a normal client.
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok" {
		t.Errorf("a normal request after the slowloris: %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestSlowBodyCutOff: a client that sends its headers at once and then its body a byte at a
// time is cut off by the read timeout: the handler's read fails and the connection closes.
func TestSlowBodyCutOff(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}), WithReadHeaderTimeout(300*time.Millisecond), WithReadTimeout(600*time.Millisecond))
	c := slowClient(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", "x")
	closedWithin(t, c, 10*time.Second)
	select {
	case err := <-readErr:
		if err == nil {
			t.Error("the handler read the whole slow body; want a read error")
		}
	case <-time.After(5 * time.Second):
		t.Error("the handler was still reading the body 5 s after the connection closed")
	}
}

// TestIdleConnectionClosed: a kept-alive connection that sends nothing more is closed after
// the idle timeout.
func TestIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		WithIdleTimeout(300*time.Millisecond))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: read %v, want EOF (closed by the server)", err)
	}
}

func TestServePprof(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := ServePprof(ctx, "127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile:") {
		t.Errorf("goroutine profile: status %d, body %.200q", res.StatusCode, body)
	}
	res, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the pprof listener: status %d, want 404 (it serves profiles only)", res.StatusCode)
	}
}
