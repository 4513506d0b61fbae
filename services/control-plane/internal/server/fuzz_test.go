package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/distcache/distcache/workflows"
)

// FuzzRESTCreateBody posts arbitrary bodies to POST /v1/projections on real servers. Whatever the
// body: no 5xx; the answer is JSON; a 400 is INVALID_ARGUMENT with a message; and whatever is
// accepted (200) is a definition that validates against its model and started exactly one build.
func FuzzRESTCreateBody(f *testing.F) {
	for _, s := range []string{
		`{"name":"users_by_email","model":"users","key_template":"{email}","fields":["id","email"]}`,
		`{"name":"p","model":"users","key_template":"{org_id}:{email}","lowercase_key":true,"fields":["id"],"filter":{"field":"status","op":"in","values":["a","b"]}}`,
		`{"name":"p","model":"orgs","key_template":"{slug}","fields":["slug"],"filter":{"field":"id","op":"not_eq","values":["1"]}}`,
		`{"name":"","fields":[null]}`,
		`{"filter":{"values":{}}}`,
		`[]`, `null`, `"x"`, `{"name":1e400}`, `{"fields":["a","a"]}`,
	} {
		f.Add([]byte(s))
	}
	st := startStack(f)
	authz := "Bearer " + goodToken
	f.Fuzz(func(t *testing.T, body []byte) {
		st.reg.reset()
		st.tc.reset()
		code, _, b := st.do(t, "POST", "/v1/projections", authz, body)
		if code >= 500 {
			t.Fatalf("status %d for body %q: %s", code, body, b)
		}
		var generic map[string]any
		if err := json.Unmarshal(b, &generic); err != nil {
			t.Fatalf("response to %q is not a JSON object: %s", body, b)
		}
		switch code {
		case http.StatusOK:
			starts := st.tc.startedIDs()
			if len(starts) != 1 {
				t.Fatalf("accepted %q but started %v", body, starts)
			}
			st.tc.mu.Lock()
			bp := st.tc.args[0].(workflows.BuildParams)
			st.tc.mu.Unlock()
			fields := testModels[bp.Definition.Model]
			if fields == nil {
				t.Fatalf("accepted %q with unknown model %q", body, bp.Definition.Model)
			}
			if err := bp.Definition.ValidateAgainst(fields); err != nil {
				t.Fatalf("accepted %q, an invalid definition: %v", body, err)
			}
			if !st.reg.has(bp.Definition.Name) {
				t.Fatalf("accepted %q but did not register %q", body, bp.Definition.Name)
			}
		case http.StatusBadRequest:
			var e restError
			if json.Unmarshal(b, &e) != nil || e.Code != int(codes.InvalidArgument) || e.Message == "" {
				t.Fatalf("400 for %q without INVALID_ARGUMENT and a message: %s", body, b)
			}
			if len(st.tc.startedIDs()) != 0 {
				t.Fatalf("refused %q but started a workflow", body)
			}
		default:
			t.Fatalf("status %d for %q: %s", code, body, b)
		}
	})
}
