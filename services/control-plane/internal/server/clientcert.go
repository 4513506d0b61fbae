package server

import (
	"crypto/tls"
	"net/http"
	"strings"
)

// HTTPTLS returns the HTTP listener's TLS configuration for the gRPC one, t. With mutual TLS the
// HTTP listener asks for a client certificate but does not require it at the handshake, so that
// Kubernetes' probes (which present none) reach /healthz and /readyz; RequireClientCert then
// refuses every /v1/ call that came without a verified certificate.
func HTTPTLS(t *tls.Config) *tls.Config {
	if t == nil || t.ClientAuth != tls.RequireAndVerifyClientCert {
		return t
	}
	h := t.Clone()
	h.ClientAuth = tls.VerifyClientCertIfGiven
	return h
}

// RequireClientCert wraps h: a request under /v1/ whose connection presented no certificate
// verified against the client CA is answered 401, in the gateway's error shape. The health,
// readiness, metrics and OpenAPI paths stay open, as without TLS.
func RequireClientCert(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/") && (r.TLS == nil || len(r.TLS.VerifiedChains) == 0) {
			writeJSON(w, http.StatusUnauthorized, map[string]any{
				"code": 16, "message": "a client certificate signed by the control-plane's client CA is required",
			})
			return
		}
		h.ServeHTTP(w, r)
	})
}
