package apitoken

import (
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	files := map[string]string{
		"/etc/tokens": "# comment\nfirst-token-0123456789\r\n\nsecond-token-0123456789\n",
		"/etc/short":  "tiny\n",
	}
	readFile := func(p string) ([]byte, error) {
		if s, ok := files[p]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	tests := []struct {
		name         string
		env          map[string]string
		insecureOK   bool
		wantTokens   int
		wantInsecure bool
		wantVar      string // the variable an error names; "" for none
	}{
		{name: "comma-separated", env: map[string]string{"SVC_TOKENS": "alpha-token-0123456789, beta-token-0123456789"}, wantTokens: 2},
		{name: "file", env: map[string]string{"SVC_TOKENS_FILE": "/etc/tokens"}, wantTokens: 2},
		{name: "both", env: map[string]string{"SVC_TOKENS": "alpha-token-0123456789", "SVC_TOKENS_FILE": "/etc/tokens"}, wantTokens: 3},
		{name: "none", env: map[string]string{}, wantVar: "SVC_TOKENS"},
		{name: "none, insecure not allowed", env: map[string]string{"SVC_INSECURE_NO_AUTH": "true"}, wantVar: "SVC_TOKENS"},
		{name: "none, insecure allowed but not asked", env: map[string]string{}, insecureOK: true, wantVar: "SVC_TOKENS"},
		{name: "insecure", env: map[string]string{"SVC_INSECURE_NO_AUTH": "true"}, insecureOK: true, wantInsecure: true},
		{name: "insecure and tokens", env: map[string]string{"SVC_INSECURE_NO_AUTH": "true", "SVC_TOKENS": "alpha-token-0123456789"}, insecureOK: true, wantVar: "SVC_INSECURE_NO_AUTH"},
		{name: "short", env: map[string]string{"SVC_TOKENS": "tiny1"}, wantVar: "SVC_TOKENS"},
		{name: "short in file", env: map[string]string{"SVC_TOKENS_FILE": "/etc/short"}, wantVar: "SVC_TOKENS_FILE"},
		{name: "missing file", env: map[string]string{"SVC_TOKENS_FILE": "/nope"}, wantVar: "SVC_TOKENS_FILE"},
		{name: "control character", env: map[string]string{"SVC_TOKENS": "alpha-token\x01-0123456789"}, wantVar: "SVC_TOKENS"},
		{name: "too long", env: map[string]string{"SVC_TOKENS": strings.Repeat("x", MaxLen+1)}, wantVar: "SVC_TOKENS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := envconf.New("SVC", func(k string) string { return tt.env[k] })
			var opts []Option
			if tt.insecureOK {
				opts = append(opts, AllowInsecure())
			}
			c := Load(r, readFile, opts...)
			err := r.Err()
			if tt.wantVar == "" {
				if err != nil || len(c.Tokens) != tt.wantTokens || c.Insecure != tt.wantInsecure {
					t.Fatalf("got %d tokens, insecure %v, err %v; want %d, %v, nil", len(c.Tokens), c.Insecure, err, tt.wantTokens, tt.wantInsecure)
				}
				return
			}
			var ve *envconf.VarError
			if !errors.As(err, &ve) || ve.Var != tt.wantVar {
				t.Fatalf("got err %v, want one naming %s", err, tt.wantVar)
			}
			for _, v := range tt.env {
				if len(v) >= 5 && strings.Contains(err.Error(), v) && !strings.HasPrefix(v, "/") && v != "true" {
					t.Errorf("error %q quotes the configured value %q", err, v)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tk := New([]string{"alpha-token-0123456789", "beta-token-0123456789"})
	tests := []struct {
		authz string
		want  error
	}{
		{authz: "Bearer alpha-token-0123456789", want: nil},
		{authz: "bearer beta-token-0123456789", want: nil},
		{authz: "  Bearer   alpha-token-0123456789  ", want: nil},
		{authz: "", want: ErrMissingToken},
		{authz: "Bearer", want: ErrBadToken},
		{authz: "Bearer ", want: ErrBadToken},
		{authz: "alpha-token-0123456789", want: ErrBadToken},
		{authz: "Basic alpha-token-0123456789", want: ErrBadToken},
		{authz: "Bearer alpha-token-012345678", want: ErrBadToken},
		{authz: "Bearer alpha-token-01234567890", want: ErrBadToken},
		{authz: "Bearer gamma-token-0123456789", want: ErrBadToken},
		{authz: "Bearer alpha-token-0123456789\r\nX-Injected: 1", want: ErrBadToken},
		{authz: "Bearer " + strings.Repeat("a", MaxLen+1), want: ErrBadToken},
	}
	for _, tt := range tests {
		if got := tk.Check(tt.authz); !errors.Is(got, tt.want) {
			t.Errorf("Check(%q) = %v, want %v", tt.authz, got, tt.want)
		}
	}
	if err := New(nil).Check(""); err != nil || !New(nil).Open() {
		t.Errorf("a set of no token (insecure): Check(\"\") = %v, Open %v; want nil, true", err, New(nil).Open())
	}
	if tk.Open() {
		t.Error("a set of two tokens is open")
	}
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	tk := New([]string{"alpha-token-0123456789"})
	reached := 0
	refuse := func(w http.ResponseWriter, err error) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(err.Error()))
	}
	h := tk.Middleware("test", refuse, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached++ }))
	tests := []struct {
		headers  []string
		want     int
		wantBody string
	}{
		{headers: nil, want: 401, wantBody: ErrMissingToken.Error()},
		{headers: []string{"Bearer wrong-token-0123456789"}, want: 401, wantBody: ErrBadToken.Error()},
		{headers: []string{"Bearer alpha-token-0123456789", "Bearer alpha-token-0123456789"}, want: 401, wantBody: ErrManyTokens.Error()},
		{headers: []string{"Bearer alpha-token-0123456789"}, want: 200},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/v1/things", nil)
		for _, v := range tt.headers {
			r.Header.Add("Authorization", v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want || w.Body.String() != tt.wantBody {
			t.Errorf("headers %v: %d %q, want %d %q", tt.headers, w.Code, w.Body, tt.want, tt.wantBody)
		}
		if got := w.Header().Get("WWW-Authenticate"); tt.want == 401 && got != `Bearer realm="test"` {
			t.Errorf("headers %v: WWW-Authenticate %q, want the Bearer challenge", tt.headers, got)
		}
	}
	if reached != 1 {
		t.Errorf("handler reached %d times, want 1 (only the valid request)", reached)
	}
}
