package rawhttp

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs h on a loopback port until the test ends.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

// recorder is a testing.TB that keeps the failures Run reports.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestRun(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "boom at 10.0.0.1", http.StatusInternalServerError)
		case "/hang":
			<-release
		default:
			_, _ = w.Write([]byte("hello " + r.Header.Get("X-Echo")))
		}
	}))
	resp, err := Do(addr, Request("GET", "/", []string{"X-Echo: a"}, ""), 5*time.Second)
	if err != nil || resp.Status != 200 || resp.Body != "hello a" {
		t.Fatalf("Do: %+v, %v; want 200 \"hello a\"", resp, err)
	}
	if _, err := Do(addr, Request("GET", "/hang", nil, ""), 300*time.Millisecond); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("a request that hangs: %v, want ErrNoAnswer", err)
	}
	// A header line with a NUL: the server refuses it itself (400), which Run accepts.
	rec := &recorder{TB: t}
	got := Run(rec, addr, []Case{
		{Name: "ok", Raw: Request("GET", "/", nil, ""), Want: 200},
		{Name: "nul", Raw: Request("GET", "/", []string{"X-Echo: a\x00b"}, "")},
		{Name: "5xx", Raw: Request("GET", "/fail", nil, "")},
		{Name: "wrong status", Raw: Request("GET", "/", nil, ""), Want: 401},
		{Name: "leak", Raw: Request("GET", "/", []string{"X-Echo: secret"}, ""), NotInBody: []string{"secret"}},
		{Name: "hang", Raw: Request("GET", "/hang", nil, "")},
	}, 300*time.Millisecond)
	if got["ok"] != 200 || got["nul"] != 400 {
		t.Errorf("statuses %v, want ok 200, nul 400", got)
	}
	want := []string{"5xx:", "wrong status:", "leak:", "hang:"}
	if len(rec.errs) != len(want) {
		t.Fatalf("Run reported %q, want one failure for each of %v", rec.errs, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(rec.errs[i], w) {
			t.Errorf("failure %d: %q, want one about %s", i, rec.errs[i], w)
		}
	}
}
