package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ProjectionDef is a projection as the control-plane's REST API takes it.
type ProjectionDef struct {
	Name        string   `json:"name"`
	Model       string   `json:"model"`
	KeyTemplate string   `json:"keyTemplate"`
	Fields      []string `json:"fields"`
}

// Projection is the sample projection: items by their key, with the sequence number the writer
// bumps.
var Projection = ProjectionDef{Name: "items_by_k", Model: "items", KeyTemplate: "{k}", Fields: []string{"id", "k", "seq", "pad"}}

type api struct {
	base, token string
	http        *http.Client
}

func newAPI(base, token string) *api {
	return &api{base: base, token: token, http: &http.Client{Timeout: 10 * time.Second}}
}

func (a *api) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func (a *api) createProjection(ctx context.Context, p ProjectionDef) error {
	return a.do(ctx, http.MethodPost, "/v1/projections", p, nil)
}

type status struct {
	Projection struct {
		CurrentGeneration json.RawMessage `json:"current_generation"`
	} `json:"projection"`
	Generations []struct {
		Generation json.RawMessage `json:"generation"`
		State      string          `json:"state"`
	} `json:"generations"`
}

func genNumber(r json.RawMessage) string { return strings.Trim(string(r), `"`) }

// waitLive polls the projection's status until it has a live generation.
func (a *api) waitLive(ctx context.Context, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var st status
		err := a.do(ctx, http.MethodGet, "/v1/projections/"+name+"/status", nil, &st)
		if err == nil {
			if g := genNumber(st.Projection.CurrentGeneration); g != "" && g != "0" && g != "null" {
				return nil
			}
			for _, g := range st.Generations {
				if g.State == "failed" {
					return fmt.Errorf("projection %s: generation %s failed", name, genNumber(g.Generation))
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("projection %s not live in %v (last error: %v): %w", name, timeout, err, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
