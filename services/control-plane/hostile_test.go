package main

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/svcconfig/httpserve"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/tools/rawhttp"
)

// TestHostileREST sends the real service (run, as main does, on a real PostgreSQL, Redis and
// Temporal) malformed and hostile REST requests: missing, wrong, short, huge, doubled tokens and
// tokens with CR/LF or NUL; projection names with ../, NUL, unicode, 10 KB, template and SQL
// injection; invalid, deep and huge JSON; wrong content types and methods; negative and huge
// generations; traversal in the URL; junk in the query string. None may be answered 5xx or go
// unanswered (each has a deadline), no answer may echo the token, and afterwards the service is
// ready and a valid request works.
func TestHostileREST(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	tmp := devstacktest.Temporal(t)
	env := serviceEnv(dbURL, r.Addr, tmp.HostPort)
	l, logs, stop := startService(ctx, t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	addr := l.http.Addr().String()

	good := "Authorization: Bearer " + testToken
	ctJSON := "Content-Type: application/json"
	req := rawhttp.Request
	get := func(path string, headers ...string) string { return req("GET", path, headers, "") }
	post := func(path, body string, headers ...string) string { return req("POST", path, headers, body) }
	long := strings.Repeat("a", 10<<10)
	deep := strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000)
	cases := []rawhttp.Case{
		// Tokens.
		{Name: "no token", Raw: get("/v1/projections"), Want: 401},
		{Name: "wrong token", Raw: get("/v1/projections", "Authorization: Bearer wrong-token-0123456789"), Want: 401},
		{Name: "short token", Raw: get("/v1/projections", "Authorization: Bearer abc"), Want: 401},
		{Name: "token prefix", Raw: get("/v1/projections", "Authorization: Bearer "+testToken[:len(testToken)-1]), Want: 401},
		{Name: "10 KB token", Raw: get("/v1/projections", "Authorization: Bearer "+long), Want: 401},
		{Name: "100 KB token", Raw: get("/v1/projections", "Authorization: Bearer "+strings.Repeat("b", 100<<10)), Want: http.StatusRequestHeaderFieldsTooLarge},
		{Name: "basic scheme", Raw: get("/v1/projections", "Authorization: Basic "+testToken), Want: 401},
		{Name: "scheme only", Raw: get("/v1/projections", "Authorization: Bearer"), Want: 401},
		{Name: "two tokens", Raw: get("/v1/projections", good, good), Want: 401},
		{Name: "LF injects a second Authorization", Raw: get("/v1/projections", "Authorization: Bearer wrong\n"+good), Want: 0},
		{Name: "CR inside the token", Raw: get("/v1/projections", "Authorization: Bearer "+testToken[:5]+"\r"+testToken[5:])},
		{Name: "NUL inside the token", Raw: get("/v1/projections", "Authorization: Bearer "+testToken+"\x00")},
		{Name: "unicode token", Raw: get("/v1/projections", "Authorization: Bearer tökén-ünïcødé-0123456789"), Want: 401},
		{Name: "token in the query string", Raw: get("/v1/projections?access_token=" + testToken), Want: 401},
		// Names.
		{Name: "encoded ../ in a name", Raw: get("/v1/projections/..%2F..%2Fetc%2Fpasswd", good)},
		{Name: "NUL in a name", Raw: get("/v1/projections/a%00b", good), Want: 400},
		{Name: "unicode name", Raw: get("/v1/projections/%C3%BCn%C3%AFc%C3%B8d%C3%A9", good), Want: 400},
		{Name: "10 KB name", Raw: get("/v1/projections/"+long, good), Want: 400},
		{Name: "template injection in a name", Raw: get("/v1/projections/%7B%7B.Env%7D%7D", good), Want: 400},
		{Name: "jndi in a name", Raw: get("/v1/projections/$%7Bjndi:ldap:%2F%2Fx%7D", good)},
		{Name: "SQL in a name", Raw: get("/v1/projections/x'%3BDROP%20TABLE%20distcache_projections%3B--", good), Want: 400},
		{Name: "bad escape in a name", Raw: get("/v1/projections/%zz", good), Want: 400},
		{Name: "invalid UTF-8 in a name", Raw: get("/v1/projections/%FF%FE", good), Want: 400},
		{Name: "invalid UTF-8 in a query", Raw: get("/v1/projections?page_token=%FF", good), Want: 400},
		{Name: "delete a traversal name", Raw: req("DELETE", "/v1/projections/..%2F..", []string{good}, "")},
		{Name: "status of a 10 KB name", Raw: get("/v1/projections/"+long+"/status", good), Want: 400},
		// Bodies.
		{Name: "invalid JSON", Raw: post("/v1/projections", `{"projection":`, good, ctJSON), Want: 400},
		{Name: "empty body", Raw: post("/v1/projections", "", good, ctJSON, "Content-Length: 0"), Want: 400},
		{Name: "JSON array", Raw: post("/v1/projections", `[]`, good, ctJSON), Want: 400},
		{Name: "deep nesting", Raw: post("/v1/projections", `{"projection":`+deep+`}`, good, ctJSON), Want: 400},
		{Name: "body over 1 MiB", Raw: post("/v1/projections", `{"projection":{"name":"`+strings.Repeat("x", 2<<20)+`"}}`, good, ctJSON), Want: 413},
		{Name: "chunked body over 1 MiB", Raw: post("/v1/projections", chunked(strings.Repeat("y", 2<<20)), good, ctJSON, "Transfer-Encoding: chunked"), Want: 413},
		// The server gives up on the missing bytes after its read timeout (httpserve's default).
		{Name: "content length that lies", Raw: post("/v1/projections", `{}`, good, ctJSON, "Content-Length: 99999"),
			Timeout: httpserve.DefaultReadTimeout + 10*time.Second},
		{Name: "negative content length", Raw: post("/v1/projections", `{}`, good, ctJSON, "Content-Length: -1"), Want: 400},
		{Name: "bad chunk size", Raw: post("/v1/projections", "zz\r\n{}\r\n0\r\n\r\n", good, ctJSON, "Transfer-Encoding: chunked")},
		{Name: "XML", Raw: post("/v1/projections", `<projection name="x"/>`, good, "Content-Type: application/xml"), Want: 400},
		{Name: "form", Raw: post("/v1/projections", `projection=x`, good, "Content-Type: application/x-www-form-urlencoded"), Want: 400},
		{Name: "invalid UTF-8", Raw: post("/v1/projections", "{\"projection\":{\"name\":\"\xff\xfe\"}}", good, ctJSON), Want: 400},
		{Name: "unknown field", Raw: post("/v1/projections", `{"projection":{"name":"x","model":"users","key_template":"{email}","fields":["id"]},"admin":true}`, good, ctJSON), Want: 400},
		{Name: "wrong type", Raw: post("/v1/projections", `{"projection":{"name":123}}`, good, ctJSON), Want: 400},
		{Name: "template injection in a key", Raw: post("/v1/projections", `{"projection":{"name":"tpl","model":"users","key_template":"{{.Env}}","fields":["id"]}}`, good, ctJSON), Want: 400},
		{Name: "unknown filter op", Raw: post("/v1/projections", `{"projection":{"name":"flt","model":"users","key_template":"{email}","fields":["id"],"filter":{"field":"status","op":"eval","values":["1"]}}}`, good, ctJSON), Want: 400},
		{Name: "traversal model", Raw: post("/v1/projections", `{"projection":{"name":"mdl","model":"../../users","key_template":"{email}","fields":["id"]}}`, good, ctJSON), Want: 400},
		{Name: "10000 fields", Raw: post("/v1/projections", `{"projection":{"name":"many","model":"users","key_template":"{email}","fields":[`+strings.Repeat(`"f",`, 9999)+`"f"]}}`, good, ctJSON), Want: 400},
		// Methods.
		{Name: "PATCH", Raw: req("PATCH", "/v1/projections", []string{good}, "")},
		{Name: "TRACE", Raw: req("TRACE", "/v1/projections", []string{good}, "")},
		{Name: "made-up method", Raw: req("FROB", "/v1/projections", []string{good}, "")},
		{Name: "PUT without a name", Raw: req("PUT", "/v1/projections", []string{good, ctJSON}, `{}`)},
		{Name: "DELETE the collection", Raw: req("DELETE", "/v1/projections", []string{good}, "")},
		{Name: "POST to readyz", Raw: post("/readyz", `{}`, ctJSON), Want: 405},
		// Generations.
		{Name: "negative generation", Raw: post("/v1/projections/x:cutover", `{"generation":-1}`, good, ctJSON), Want: 400},
		{Name: "zero generation", Raw: post("/v1/projections/x:cutover", `{"generation":0}`, good, ctJSON), Want: 400},
		{Name: "huge generation", Raw: post("/v1/projections/nosuch:cutover", `{"generation":9223372036854775807}`, good, ctJSON), Want: 404},
		{Name: "generation past int64", Raw: post("/v1/projections/x:cutover", `{"generation":99999999999999999999}`, good, ctJSON), Want: 400},
		{Name: "generation as text", Raw: post("/v1/projections/x:cutover", `{"generation":"one"}`, good, ctJSON), Want: 400},
		{Name: "generation 1e400", Raw: post("/v1/projections/x:cutover", `{"generation":1e400}`, good, ctJSON), Want: 400},
		{Name: "rollback of nothing", Raw: post("/v1/projections/nosuch:rollback", `{}`, good, ctJSON), Want: 404},
		// URLs and query strings.
		{Name: "../ in the URL", Raw: get("/v1/projections/../../etc/passwd", good)},
		{Name: "encoded dots in the URL", Raw: get("/v1/%2e%2e/%2e%2e/metrics", good)},
		{Name: "absolute URL", Raw: get("http://evil.example/v1/projections", good)},
		{Name: "negative page size", Raw: get("/v1/projections?page_size=-1", good), Want: 400},
		{Name: "huge page size", Raw: get("/v1/projections?page_size=99999999999999999999", good), Want: 400},
		{Name: "junk page token", Raw: get("/v1/projections?page_token=%00%FF%FE"+long[:100], good), Want: 400},
		{Name: "query junk", Raw: get("/v1/projections?a=b&a=c&%zz&[]=x&=&&", good), Want: 400},
		{Name: "10 KB query", Raw: get("/v1/projections?junk="+long, good)},
	}
	for i := range cases {
		cases[i].NotInBody = append(cases[i].NotInBody, testToken)
	}
	if len(cases) < 40 {
		t.Fatalf("%d hostile requests, want at least 40", len(cases))
	}
	got := rawhttp.Run(t, addr, cases, 15*time.Second)
	t.Logf("%d hostile requests answered: %v", len(got), got)

	// The service is still healthy: ready, and a valid request works.
	resp, err := rawhttp.Do(addr, get("/readyz"), 10*time.Second)
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, `"status":"ok"`) {
		t.Errorf("/readyz after the hostile requests: %+v, %v; want 200 ok\n%s", resp, err, logs)
	}
	resp, err = rawhttp.Do(addr, get("/v1/projections", good), 10*time.Second)
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, `"projections"`) {
		t.Errorf("a valid list after the hostile requests: %+v, %v; want 200 with projections", resp, err)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Error("the log holds the token")
	}
}

// chunked frames body as one chunk and the last chunk.
func chunked(body string) string {
	return strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n0\r\n\r\n"
}
