// Package apitoken is the bearer-token check of a service's API, the same in every service that
// has one (the control-plane's projection API, the core-publisher's backload API): the tokens
// are read from <PREFIX>_TOKENS (comma-separated) and <PREFIX>_TOKENS_FILE (one per line, "#"
// comments), each at least MinLen bytes of printable non-space characters; they are kept as
// SHA-256 digests and compared in constant time; an error or log line never holds a token.
//
// A service that may run without authentication (a laptop, a test) says so with
// <PREFIX>_INSECURE_NO_AUTH=true, read only when the service opts in with AllowInsecure;
// without it, a service with no token refuses to start.
package apitoken

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

// Variable names, under the service's prefix: CONTROLPLANE_TOKENS, PUBLISHER_TOKENS_FILE, ...
const (
	VarTokens         = "TOKENS"           // secret: comma-separated tokens
	VarTokensFile     = "TOKENS_FILE"      // a file of tokens, one per line
	VarInsecureNoAuth = "INSECURE_NO_AUTH" // true: serve the API without tokens (AllowInsecure only)
)

const (
	// MinLen is the shortest token accepted: a guessable token is refused at start.
	MinLen = 16
	// MaxLen is the longest token accepted, and longer Authorization values are refused
	// before they are hashed.
	MaxLen = 4 << 10
)

// Errors of Check. Their text is safe to return to a caller: it never holds the token.
var (
	ErrMissingToken = errors.New("missing bearer token")
	ErrBadToken     = errors.New("invalid bearer token")
	ErrManyTokens   = errors.New("more than one Authorization value")
)

// Config is what Load read.
type Config struct {
	Tokens []string // secret
	// Insecure: no token was configured and <PREFIX>_INSECURE_NO_AUTH=true allows it; the API
	// then accepts every request.
	Insecure bool
}

// Option changes what Load accepts.
type Option func(*options)

type options struct{ allowInsecure bool }

// AllowInsecure lets <PREFIX>_INSECURE_NO_AUTH=true stand in for the tokens. Default: the
// variable is not read and at least one token is required.
func AllowInsecure() Option { return func(o *options) { o.allowInsecure = true } }

// Load reads the tokens under r's prefix; readFile reads <PREFIX>_TOKENS_FILE (os.ReadFile in
// production). Errors are recorded in r and never quote a token.
func Load(r *envconf.Reader, readFile func(string) ([]byte, error), opts ...Option) Config {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	varTokens, varFile := r.Name(VarTokens), r.Name(VarTokensFile)
	var c Config
	add := func(src, raw string, sep func(rune) bool) {
		for i, tok := range strings.FieldsFunc(raw, sep) {
			tok = strings.TrimSpace(tok)
			switch {
			case tok == "" || strings.HasPrefix(tok, "#"):
			case len(tok) < MinLen:
				r.Fail(src, "token #%d is shorter than %d bytes", i+1, MinLen)
			case len(tok) > MaxLen:
				r.Fail(src, "token #%d is longer than %d bytes", i+1, MaxLen)
			case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
				r.Fail(src, "token #%d holds whitespace or control characters", i+1)
			default:
				c.Tokens = append(c.Tokens, tok)
			}
		}
	}
	add(varTokens, r.Secret(varTokens), func(c rune) bool { return c == ',' })
	if path := r.String(varFile, ""); path != "" {
		b, err := readFile(path)
		if err != nil {
			r.Fail(varFile, "read %s: %v", path, errors.Unwrap(err))
		} else {
			add(varFile, string(b), func(c rune) bool { return c == '\n' || c == '\r' })
		}
	}
	insecure := o.allowInsecure && r.Bool(r.Name(VarInsecureNoAuth), false)
	switch {
	case len(c.Tokens) > 0 && insecure:
		r.Fail(r.Name(VarInsecureNoAuth), "true although tokens are configured: unset one of them")
	case len(c.Tokens) > 0:
	case insecure:
		c.Insecure = true
	case o.allowInsecure:
		r.Fail(varTokens, "at least one API token is required (%s, comma-separated, or %s, one per line), or %s=true to serve the API without authentication",
			varTokens, varFile, r.Name(VarInsecureNoAuth))
	default:
		r.Fail(varTokens, "at least one API token is required (%s, comma-separated, or %s, one per line)", varTokens, varFile)
	}
	return c
}

// Tokens is a set of accepted bearer tokens, stored as SHA-256 digests so every comparison is of
// equal length and takes the same time whichever token (if any) matches. The nil *Tokens, or one
// made of no token, accepts every request: the service was started with
// <PREFIX>_INSECURE_NO_AUTH=true.
type Tokens struct {
	digests [][sha256.Size]byte
}

// New returns the set of the given tokens; none makes a set that accepts everything (the
// configuration's Insecure).
func New(tokens []string) *Tokens {
	t := &Tokens{}
	for _, tok := range tokens {
		t.digests = append(t.digests, sha256.Sum256([]byte(tok)))
	}
	return t
}

// Open reports whether the set accepts every request (no token configured).
func (t *Tokens) Open() bool { return t == nil || len(t.digests) == 0 }

// Valid reports whether token is one of the set, in time independent of which one matches.
func (t *Tokens) Valid(token string) bool {
	if t.Open() {
		return true
	}
	d := sha256.Sum256([]byte(token))
	ok := 0
	for i := range t.digests {
		ok |= subtle.ConstantTimeCompare(d[:], t.digests[i][:])
	}
	return ok == 1
}

// Check validates an Authorization value ("Bearer <token>", scheme case-insensitive).
func (t *Tokens) Check(authorization string) error {
	if t.Open() {
		return nil
	}
	if len(authorization) > MaxLen {
		return ErrBadToken
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(authorization), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		if authorization == "" {
			return ErrMissingToken
		}
		return ErrBadToken
	}
	if !t.Valid(strings.TrimSpace(token)) {
		return ErrBadToken
	}
	return nil
}

// CheckValues validates the values of the Authorization header (or gRPC metadata key): exactly
// one, and valid.
func (t *Tokens) CheckValues(vals []string) error {
	if t.Open() {
		return nil
	}
	switch len(vals) {
	case 0:
		return ErrMissingToken
	case 1:
		return t.Check(vals[0])
	default:
		return ErrManyTokens
	}
}

// Refusal answers a request refused with err (one of this package's errors, safe to show): it
// writes status 401 (http.StatusUnauthorized) and a body in the service's error shape. The
// WWW-Authenticate challenge is set already.
type Refusal func(w http.ResponseWriter, err error)

// Middleware returns next behind the token check: a request without exactly one valid
// Authorization header is answered 401 with a Bearer challenge for realm and the body refuse
// writes; it never reaches next.
func (t *Tokens) Middleware(realm string, refuse Refusal, next http.Handler) http.Handler {
	challenge := `Bearer realm="` + realm + `"`
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := t.CheckValues(r.Header.Values("Authorization")); err != nil {
			w.Header().Set("WWW-Authenticate", challenge)
			refuse(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
