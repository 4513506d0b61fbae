package main

import (
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/tools/rawhttp"
)

// TestHostileAPI sends the real service (run, on a real PostgreSQL and broker) malformed and
// hostile requests to its authenticated endpoints: missing, wrong, short, huge and doubled
// tokens, tokens with CR/LF or NUL, model names with ../, NUL, unicode, 10 KB, template and
// SQL injection, wrong methods, a huge body, query junk. None may be answered 5xx or go
// unanswered, none may start a backload or echo the token, and afterwards the service is ready
// and a valid request works.
func TestHostileAPI(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("orgs"))
	env := serviceEnv(t, dbURL, k.Addr, "PUBLISHER_AUTO_BACKLOAD", "false")
	base, _ := startService(t, env)
	devstacktest.Eventually(t, 30*time.Second, func() bool { return role(t, base) == "active" }, "ready and active")
	addr := env["PUBLISHER_HTTP_ADDR"]

	good := "Authorization: Bearer " + testToken
	req := rawhttp.Request
	long := strings.Repeat("a", 10<<10)
	cases := []rawhttp.Case{
		{Name: "no token", Raw: req("POST", "/v1/backload/orgs", nil, ""), Want: 401},
		{Name: "wrong token", Raw: req("POST", "/v1/backload/orgs", []string{"Authorization: Bearer wrong-token-0123456789"}, ""), Want: 401},
		{Name: "short token", Raw: req("GET", "/v1/models", []string{"Authorization: Bearer x"}, ""), Want: 401},
		{Name: "10 KB token", Raw: req("GET", "/v1/models", []string{"Authorization: Bearer " + long}, ""), Want: 401},
		{Name: "two tokens", Raw: req("GET", "/v1/models", []string{good, good}, ""), Want: 401},
		{Name: "LF injects a second Authorization", Raw: req("POST", "/v1/backload/orgs", []string{"Authorization: Bearer wrong\n" + good}, ""), Want: 401},
		{Name: "CR inside the token", Raw: req("GET", "/v1/models", []string{"Authorization: Bearer " + testToken[:4] + "\r" + testToken[4:]}, "")},
		{Name: "NUL inside the token", Raw: req("GET", "/v1/models", []string{"Authorization: Bearer " + testToken + "\x00"}, "")},
		{Name: "token in the query string", Raw: req("GET", "/v1/models?token="+testToken, nil, ""), Want: 401},
		{Name: "encoded ../ in a model", Raw: req("POST", "/v1/backload/..%2F..%2Fetc%2Fpasswd", []string{good}, ""), Want: 400},
		{Name: "../ in the URL", Raw: req("POST", "/v1/backload/../../v1/models", []string{good}, "")},
		{Name: "NUL in a model", Raw: req("GET", "/v1/backload/or%00gs", []string{good}, ""), Want: 400},
		{Name: "unicode model", Raw: req("POST", "/v1/backload/%C3%BCsers", []string{good}, ""), Want: 400},
		{Name: "invalid UTF-8 model", Raw: req("POST", "/v1/backload/%FF", []string{good}, ""), Want: 400},
		{Name: "10 KB model", Raw: req("POST", "/v1/backload/"+long, []string{good}, ""), Want: 400},
		{Name: "template injection", Raw: req("POST", "/v1/backload/%7B%7B.Env%7D%7D", []string{good}, ""), Want: 400},
		{Name: "SQL in a model", Raw: req("POST", "/v1/backload/orgs'%3BDROP%20TABLE%20orgs%3B--", []string{good}, ""), Want: 400},
		{Name: "unknown model", Raw: req("POST", "/v1/backload/nosuch", []string{good}, ""), Want: 404},
		{Name: "DELETE", Raw: req("DELETE", "/v1/backload/orgs", []string{good}, ""), Want: 405},
		{Name: "PUT models", Raw: req("PUT", "/v1/models", []string{good}, "{}"), Want: 405},
		{Name: "made-up method", Raw: req("FROB", "/v1/models", []string{good}, "")},
		{Name: "huge body", Raw: req("POST", "/v1/backload/nosuch", []string{good, "Content-Type: application/json"}, strings.Repeat("x", 2<<20))},
		{Name: "query junk", Raw: req("GET", "/v1/models?a=b&%zz&[]=x&=&&", []string{good}, "")},
	}
	for i := range cases {
		cases[i].NotInBody = append(cases[i].NotInBody, testToken)
	}
	got := rawhttp.Run(t, addr, cases, 15*time.Second)
	t.Logf("%d hostile requests answered: %v", len(got), got)

	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_publisher_state WHERE name LIKE 'backload:%'`); n != 0 {
		t.Errorf("%d backloads recorded after requests that should all have been refused", n)
	}
	resp, err := rawhttp.Do(addr, req("GET", "/readyz", nil, ""), 10*time.Second)
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, `"status":"ok"`) {
		t.Errorf("/readyz after the hostile requests: %+v, %v; want 200 ok", resp, err)
	}
	resp, err = rawhttp.Do(addr, req("GET", "/v1/models", []string{good}, ""), 10*time.Second)
	if err != nil || resp.Status != 200 || !strings.Contains(resp.Body, `"model":"orgs"`) {
		t.Errorf("a valid request after the hostile ones: %+v, %v; want 200 listing orgs", resp, err)
	}
}
