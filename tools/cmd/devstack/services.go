package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// serviceReport is what `status` says of a service that runs: its readiness as its /readyz says it
// ("ready", "degraded: rebuilds, data_loss", "not ready: redis"), and one line per generation it is
// rebuilding in place, from its /status (the cache-producer's), so a generation whose data Redis
// lost shows as such until it is rebuilt.
type serviceReport struct {
	health   string
	rebuilds []string // "users_by_email/g3 rebuilding (data_loss): offset 1200 of 5000, since 12:00:01"
}

// serviceProbeTimeout bounds each request to a service.
const serviceProbeTimeout = 2 * time.Second

// reportService asks the service listening on addr (host:port; "" when unknown) for its readiness
// and the generations it is rebuilding.
func reportService(ctx context.Context, addr string) serviceReport {
	rep := serviceReport{health: "running"}
	if addr == "" {
		return rep
	}
	var ready struct {
		Status string `json:"status"`
	}
	if err := getJSON(ctx, "http://"+addr+"/readyz", &ready); err != nil {
		rep.health += ", /readyz: " + err.Error()
		return rep
	}
	switch {
	case ready.Status == "ok":
		rep.health += ", ready"
	case ready.Status != "":
		rep.health += ", " + ready.Status
	}
	var gens []struct {
		Projection string `json:"projection"`
		Generation int64  `json:"generation"`
		Next       int64  `json:"next_offset"`
		Rebuild    *struct {
			Reason string    `json:"reason"`
			Since  time.Time `json:"since"`
			End    int64     `json:"end_offset"`
		} `json:"rebuild"`
	}
	if err := getJSON(ctx, "http://"+addr+"/status", &gens); err != nil {
		return rep // a service without /status, or another shape: readiness says enough
	}
	for _, g := range gens {
		if g.Rebuild != nil {
			rep.rebuilds = append(rep.rebuilds, fmt.Sprintf("%s/g%d rebuilding (%s): offset %d of %d, since %s",
				g.Projection, g.Generation, g.Rebuild.Reason, g.Next, g.Rebuild.End, g.Rebuild.Since.Local().Format(time.TimeOnly)))
		}
	}
	return rep
}

// getJSON decodes the JSON body of a GET of url into v; a 503 is decoded too (a /readyz that is
// not ready says why in its body).
func getJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, serviceProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no answer: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", strings.TrimPrefix(url, "http://"), err)
	}
	return nil
}
