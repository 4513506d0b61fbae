// Package rawhttp sends HTTP/1.1 requests byte for byte as a test writes them (bare CR or LF in
// a header, NUL bytes, a method or path no client would send, a body that lies about its length),
// which net/http's client refuses to send, and reads each answer within a deadline. Tests of a
// service's hostile inputs use Run: no request may be answered 5xx, and none may hang.
package rawhttp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Response is what the server answered. Status 0: it closed the connection without an answer.
type Response struct {
	Status int
	Header http.Header
	Body   string // at most the first 64 KiB
}

// ErrNoAnswer is returned when the server neither answered nor closed within the deadline.
var ErrNoAnswer = errors.New("no answer within the deadline")

// Do sends raw to addr (host:port) and reads the answer, all within timeout.
func Do(addr, raw string, timeout time.Duration) (Response, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, raw); err != nil && !isClosed(err) {
		return Response{}, fmt.Errorf("write: %w", timeoutAs(err))
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isClosed(err) {
			return Response{}, nil // closed without answering
		}
		return Response{}, fmt.Errorf("read: %w", timeoutAs(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil && !isClosed(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Response{}, fmt.Errorf("read body: %w", timeoutAs(err))
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}, nil
}

func isClosed(err error) bool {
	var ne net.Error
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) ||
		(errors.As(err, &ne) && !ne.Timeout() && strings.Contains(err.Error(), "reset"))
}

func timeoutAs(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %v", ErrNoAnswer, err)
	}
	return err
}

// Request writes a request: the request line, Host, the given header lines (each "Name: value",
// sent as they are), Content-Length when body is not empty and no header line sets a length or
// a transfer coding, Connection: close, then body.
func Request(method, target string, headers []string, body string) string {
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: test\r\n")
	framed := false
	for _, h := range headers {
		name, _, _ := strings.Cut(h, ":")
		if strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "Transfer-Encoding") {
			framed = true
		}
		b.WriteString(h + "\r\n")
	}
	if body != "" && !framed {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(body)
	return b.String()
}

// Case is one hostile request and what it must get.
type Case struct {
	Name string
	Raw  string // the request's bytes (see Request)
	// Want is the status it must get; 0 accepts any answer below 500, or the connection closed
	// without one.
	Want int
	// NotInBody are strings the answer must not hold (a token, an internal detail).
	NotInBody []string
	// Timeout, when set, replaces Run's for this case (a request the server may only give up
	// on after its read timeout: a body shorter than its declared length).
	Timeout time.Duration
}

// Run sends every case to addr, each within timeout (or its own), and fails t for every case answered 5xx,
// not answered within the timeout, answered other than its Want, or whose answer holds one of
// its NotInBody strings. It returns the statuses by case name.
func Run(t testing.TB, addr string, cases []Case, timeout time.Duration) map[string]int {
	t.Helper()
	got := make(map[string]int, len(cases))
	for _, c := range cases {
		d := timeout
		if c.Timeout > 0 {
			d = c.Timeout
		}
		resp, err := Do(addr, c.Raw, d)
		switch {
		case err != nil:
			t.Errorf("%s: %v", c.Name, err)
			continue
		case resp.Status >= 500:
			t.Errorf("%s: answered %d %q; want no 5xx", c.Name, resp.Status, resp.Body)
		case c.Want != 0 && resp.Status != c.Want:
			t.Errorf("%s: answered %d %q; want %d", c.Name, resp.Status, resp.Body, c.Want)
		}
		for _, s := range c.NotInBody {
			if s != "" && strings.Contains(resp.Body, s) {
				t.Errorf("%s: the answer holds %q: %q", c.Name, s, resp.Body)
			}
		}
		got[c.Name] = resp.Status
	}
	return got
}
