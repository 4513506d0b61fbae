package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// PprofHandler serves net/http/pprof's endpoints under /debug/pprof/ (and nothing else).
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// ServePprof serves PprofHandler on a listener of its own at addr until ctx ends: profiling is
// opt-in (a service calls it only when its *_PPROF_ADDR is set) and never on the public port,
// so the API's tokens and network policy need not cover it. The write timeout is raised to
// let a 30 s CPU profile or trace finish. It returns once listening; the address actually
// bound is returned (addr may ask for port 0).
func ServePprof(ctx context.Context, addr string, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("pprof listen: %w", err)
	}
	srv := New(PprofHandler(), WithWriteTimeout(5*time.Minute), WithLogger(log))
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Warn("pprof listening: profiles expose the process's memory and code; keep the address private", "addr", ln.Addr().String())
	return ln.Addr().String(), nil
}
