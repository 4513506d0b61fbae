package server_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/server"
)

// TestWrongMethodAllow: a wrong method answers 405 with an Allow header on every path of the
// service, and the header is right: each method it lists is not answered 405 on that path, and
// each method answered 405 is not listed. The REST paths are every path of the OpenAPI document
// (the gateway's routes), plus the open endpoints; a few are checked word for word.
func TestWrongMethodAllow(t *testing.T) {
	t.Parallel()
	st := startStack(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(pb.OpenAPI, &doc); err != nil {
		t.Fatal(err)
	}
	paths := []string{"/healthz", "/readyz", "/metrics", "/openapi.json"}
	for p := range doc.Paths {
		paths = append(paths, strings.ReplaceAll(p, "{name}", "some_projection"))
	}
	slices.Sort(paths)
	if len(paths) < 10 {
		t.Fatalf("only %d paths: %v", len(paths), paths)
	}
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions, "PROPFIND"}
	answer := func(method, path string) (int, string) {
		code, h, _ := st.do(t, method, path, "Bearer "+goodToken, []byte("{}"))
		return code, h.Get("Allow")
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			var refused []string
			allow := ""
			for _, m := range methods {
				code, a := answer(m, path)
				if code != http.StatusMethodNotAllowed {
					continue
				}
				refused = append(refused, m)
				if a == "" {
					t.Errorf("%s %s: 405 without an Allow header", m, path)
				}
				if allow != "" && a != allow {
					t.Errorf("%s %s: Allow %q, another method got %q", m, path, a, allow)
				}
				allow = a
			}
			if len(refused) == 0 {
				t.Fatalf("no method was refused on %s", path)
			}
			listed := strings.Split(allow, ", ")
			for _, m := range listed {
				if slices.Contains(refused, m) {
					t.Errorf("%s: Allow lists %s, which is answered 405", path, m)
				}
			}
			for _, m := range methods {
				if !slices.Contains(refused, m) && !slices.Contains(listed, m) {
					t.Errorf("%s: %s is served but not in Allow %q", path, m, allow)
				}
			}
		})
	}

	for _, tt := range []struct{ method, path, allow string }{
		{"PATCH", "/v1/projections", "GET, POST"},
		{"DELETE", "/v1/projections", "GET, POST"},
		{"POST", "/v1/projections/p", "GET, PUT, DELETE"},
		{"GET", "/v1/projections/p:rollback/status", ""},
		{"DELETE", "/v1/projections/p/status", "GET"},
		{"PATCH", "/v1/projections/p:cutover", "GET, POST, PUT, DELETE"},
		{"POST", "/readyz", "GET, HEAD"},
	} {
		code, allow := answer(tt.method, tt.path)
		if tt.allow == "" {
			if code == http.StatusMethodNotAllowed {
				t.Errorf("%s %s: 405 (Allow %q), want another answer", tt.method, tt.path, allow)
			}
			continue
		}
		if code != http.StatusMethodNotAllowed || allow != tt.allow {
			t.Errorf("%s %s: %d, Allow %q; want 405, Allow %q", tt.method, tt.path, code, allow, tt.allow)
		}
	}
}

// TestAllowedMethods checks the route table the Allow header is built from against the gateway's
// HTTP rules (services/control-plane/proto/distcache/v1/controlplane_http.yaml).
func TestAllowedMethods(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/v1/projections", []string{"GET", "POST"}},
		{"/v1/projections/users_by_email", []string{"GET", "PUT", "DELETE"}},
		{"/v1/projections/users_by_email/status", []string{"GET"}},
		{"/v1/projections/users_by_email:replay", []string{"GET", "POST", "PUT", "DELETE"}},
		{"/v1/projections/:replay", []string{"GET", "PUT", "DELETE"}}, // the name ":replay", as the gateway matches
		{"/v1/nothing", nil},
		{"/v1/projections/a/b", nil},
		{"/", nil},
	} {
		if got := server.AllowedMethods(tt.path); !slices.Equal(got, tt.want) {
			t.Errorf("AllowedMethods(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}
