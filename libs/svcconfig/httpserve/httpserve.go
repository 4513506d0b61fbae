// Package httpserve builds the services' HTTP servers with every timeout set, so that no
// client holds a connection (and its goroutine and buffers) open by sending slowly, reading
// slowly or idling: a slowloris client that dribbles its headers is cut off after the header
// timeout, a slow body after the read timeout, a stalled reader after the write timeout.
package httpserve

import (
	"log/slog"
	"net/http"
	"time"
)

// Defaults. The write timeout bounds a whole handler's answer, so a service whose handlers
// wait for longer (the control-plane's Cutover waits for its workflow) raises it.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 64 << 10
)

// Option changes a server's settings.
type Option func(*http.Server)

// WithReadHeaderTimeout bounds the time to read a request's headers (default
// DefaultReadHeaderTimeout). A value ≤ 0 is ignored.
func WithReadHeaderTimeout(d time.Duration) Option {
	return func(s *http.Server) { s.ReadHeaderTimeout = positive(d, s.ReadHeaderTimeout) }
}

// WithReadTimeout bounds the time to read a whole request, body included (default
// DefaultReadTimeout). A value ≤ 0 is ignored.
func WithReadTimeout(d time.Duration) Option {
	return func(s *http.Server) { s.ReadTimeout = positive(d, s.ReadTimeout) }
}

// WithWriteTimeout bounds the time from the end of a request's headers to the end of its
// answer (default DefaultWriteTimeout). A value ≤ 0 is ignored.
func WithWriteTimeout(d time.Duration) Option {
	return func(s *http.Server) { s.WriteTimeout = positive(d, s.WriteTimeout) }
}

// WithIdleTimeout bounds how long a kept-alive connection waits for its next request (default
// DefaultIdleTimeout). A value ≤ 0 is ignored.
func WithIdleTimeout(d time.Duration) Option {
	return func(s *http.Server) { s.IdleTimeout = positive(d, s.IdleTimeout) }
}

// WithLogger sends the server's own errors (a failed TLS handshake, a panic in a handler) to
// log at level Warn instead of the standard logger.
func WithLogger(log *slog.Logger) Option {
	return func(s *http.Server) { s.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelWarn) }
}

// New returns a server of h with every timeout set: the defaults above, changed by opts.
func New(h http.Handler, opts ...Option) *http.Server {
	s := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func positive(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
