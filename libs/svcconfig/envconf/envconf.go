// Package envconf reads a service's configuration from environment
// variables. A Reader, made for one variable prefix (PUBLISHER, PRODUCER,
// CONTROLPLANE), returns typed values with their defaults and collects a
// *VarError, naming the variable, for every value it refuses, so that a
// service reports all of its configuration mistakes at once. Mask and MaskURL
// hide secrets when a configuration is logged.
//
// Values are trimmed of surrounding white space, except secrets (Secret),
// which are taken as they are. An empty variable is an unset one.
package envconf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is matched (errors.Is) by every configuration error.
var ErrInvalid = errors.New("invalid configuration")

// VarError names the environment variable whose value is refused, and why.
// Reason never holds a secret's value.
type VarError struct {
	Var    string
	Reason string
}

func (e *VarError) Error() string { return e.Var + ": " + e.Reason }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *VarError) Is(target error) bool { return target == ErrInvalid }

// Reader reads variables through getenv and collects the errors of one
// configuration load. It is not safe for concurrent use.
type Reader struct {
	prefix string
	getenv func(string) string
	errs   []error
}

// New returns a Reader of the variables under prefix (without the trailing
// underscore), read with getenv (os.Getenv in production; a map lookup in
// tests).
func New(prefix string, getenv func(string) string) *Reader {
	return &Reader{prefix: prefix, getenv: getenv}
}

// Prefix returns the prefix the Reader was made for.
func (r *Reader) Prefix() string { return r.prefix }

// Name returns the full name of the variable suffix names under the prefix:
// Name("KAFKA_BROKERS") is "PRODUCER_KAFKA_BROKERS" for prefix PRODUCER.
func (r *Reader) Name(suffix string) string { return r.prefix + "_" + suffix }

// Fail records a refused value of the variable name.
func (r *Reader) Fail(name, format string, args ...any) {
	r.errs = append(r.errs, &VarError{Var: name, Reason: fmt.Sprintf(format, args...)})
}

// Add records err, which should be (or wrap) a *VarError; nil is ignored.
func (r *Reader) Add(err error) {
	if err != nil {
		r.errs = append(r.errs, err)
	}
}

// Err returns every error recorded so far, joined; nil when none.
func (r *Reader) Err() error { return errors.Join(r.errs...) }

// Set reports whether the variable name has a non-blank value.
func (r *Reader) Set(name string) bool { return strings.TrimSpace(r.getenv(name)) != "" }

// String returns the trimmed value of name, or def when it is unset.
func (r *Reader) String(name, def string) string {
	if v := strings.TrimSpace(r.getenv(name)); v != "" {
		return v
	}
	return def
}

// Required returns the trimmed value of name, and records an error saying
// "required (hint)" when it is unset.
func (r *Reader) Required(name, hint string) string {
	v := r.String(name, "")
	if v == "" {
		r.Fail(name, "required (%s)", hint)
	}
	return v
}

// Secret returns the value of name untrimmed (a password may hold spaces).
// Never echo it in an error; log it through Mask.
func (r *Reader) Secret(name string) string { return r.getenv(name) }

// Bool returns name parsed by strconv.ParseBool (true, false, 1, 0, ...), or
// def when unset or refused.
func (r *Reader) Bool(name string, def bool) bool {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.Fail(name, "%q is not a boolean (true or false)", v)
		return def
	}
	return b
}

// Int returns name as an integer within [lo, hi], or def when unset or
// refused.
func (r *Reader) Int(name string, def, lo, hi int) int {
	return int(r.Int64(name, int64(def), int64(lo), int64(hi)))
}

// Int64 returns name as an integer within [lo, hi], or def when unset or
// refused.
func (r *Reader) Int64(name string, def, lo, hi int64) int64 {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < lo || n > hi {
		r.Fail(name, "%q is not an integer in [%d, %d]", v, lo, hi)
		return def
	}
	return n
}

// Duration returns name parsed by time.ParseDuration, at least lo, or def
// when unset or refused.
func (r *Reader) Duration(name string, def, lo time.Duration) time.Duration {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo {
		r.Fail(name, "%q is not a duration of at least %v (such as 500ms, 30s, 10m)", v, lo)
		return def
	}
	return d
}

// List returns the comma-separated items of name, trimmed, without empty
// items; nil when unset.
func (r *Reader) List(name string) []string {
	var out []string
	for _, item := range strings.Split(r.getenv(name), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// HostPort returns name, which must be host:port (the host may be empty:
// ":8080"), or def when unset. A refused value is returned as it is, so that
// a later error (a failed listen) still shows it.
func (r *Reader) HostPort(name, def string) string {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	if !IsHostPort(v) {
		r.Fail(name, "%q is not host:port", v)
	}
	return v
}

// HostPorts returns the comma-separated host:port items of name (nil when
// unset), recording an error for each item that is not host:port.
func (r *Reader) HostPorts(name string) []string {
	items := r.List(name)
	out := items[:0]
	for _, a := range items {
		if !IsHostPort(a) {
			r.Fail(name, "%q is not host:port", a)
			continue
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// RequiredHostPorts is HostPorts that records "required (hint)" when name
// lists no item.
func (r *Reader) RequiredHostPorts(name, hint string) []string {
	if len(r.List(name)) == 0 {
		r.Fail(name, "required (%s)", hint)
		return nil
	}
	return r.HostPorts(name)
}

// IsHostPort reports whether s is host:port with a port number in 0..65535.
func IsHostPort(s string) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}

// File returns the path in name, which must name a readable regular file,
// or "" when unset.
func (r *Reader) File(name string) string {
	path := r.String(name, "")
	if path == "" {
		return ""
	}
	f, err := os.Open(path)
	if err != nil {
		r.Fail(name, "cannot read %q: %v", path, errors.Unwrap(err))
		return path
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		r.Fail(name, "%q is not a regular file", path)
	}
	return path
}

// OneOf returns name, which must equal one of allowed (compared without
// regard to case), as spelt in allowed; def when unset.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	r.Fail(name, "%q is not one of %s", v, strings.Join(allowed, ", "))
	return def
}

// LogLevel returns name as a slog level (debug, info, warn, error), or def
// when unset or refused.
func (r *Reader) LogLevel(name string, def slog.Level) slog.Level {
	v := r.String(name, "")
	if v == "" {
		return def
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		r.Fail(name, "%q is not one of debug, info, warn, error", v)
		return def
	}
	return l
}

// Masked is what Mask and MaskURL show in place of a secret.
const Masked = "****"

// Mask returns "" for an unset secret and Masked for a set one, so a log
// shows whether it is set but never its value.
func Mask(secret string) string {
	if secret == "" {
		return ""
	}
	return Masked
}

// MaskURL returns a connection string with its password masked: in a URL
// (postgres://user:pw@host/db, or a password query parameter) or in the
// key=value form (host=h password=pw). A string that looks like a URL but
// does not parse is not shown at all.
func MaskURL(s string) string {
	if s == "" {
		return ""
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return "(unparsable URL, not shown)"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), Masked)
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", Masked)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	fields := strings.Fields(s)
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i] = k + "=" + Masked
		}
	}
	return strings.Join(fields, " ")
}

// MaskIn returns msg with every occurrence of the secrets (those not empty)
// replaced by Masked: for errors of libraries that may echo what they were
// given.
func MaskIn(msg string, secrets ...string) string {
	for _, s := range secrets {
		if s != "" {
			msg = strings.ReplaceAll(msg, s, Masked)
		}
	}
	return msg
}

// ConnPassword returns the password of a connection string, in the URL form
// (user:password@ or a password query parameter) or the key=value form; ""
// when it has none. It is for MaskIn.
func ConnPassword(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		if p, ok := u.User.Password(); ok {
			return p
		}
		return u.Query().Get("password")
	}
	for _, f := range strings.Fields(s) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			return strings.Trim(v, "'")
		}
	}
	return ""
}
