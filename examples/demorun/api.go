package demorun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

type projectionDef struct {
	Name         string   `json:"name"`
	Model        string   `json:"model"`
	KeyTemplate  string   `json:"keyTemplate"`
	LowercaseKey bool     `json:"lowercaseKey,omitempty"`
	Fields       []string `json:"fields"`
}

// i64 decodes a protojson int64, which is a JSON string, or a plain number.
type i64 int64

func (v *i64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	*v = i64(n)
	return err
}

type backfillProgress struct {
	RecordsDone i64     `json:"records_done"`
	Offset      i64     `json:"offset"`
	EndOffset   i64     `json:"end_offset"`
	RatePerSec  float64 `json:"rate_per_sec"`
}

type workflowRef struct {
	WorkflowID string `json:"workflow_id"`
	UIURL      string `json:"ui_url"`
}

type projectionStatus struct {
	Projection struct {
		CurrentGeneration i64 `json:"current_generation"`
	} `json:"projection"`
	Generations []struct {
		Generation i64              `json:"generation"`
		State      string           `json:"state"`
		Backfill   backfillProgress `json:"backfill"`
	} `json:"generations"`
	Running *struct {
		Generation i64              `json:"generation"`
		Phase      string           `json:"phase"`
		Backfill   backfillProgress `json:"backfill"`
		Workflow   workflowRef      `json:"workflow"`
	} `json:"running"`
}

// apiClient speaks the control-plane's REST API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(base, token string) *apiClient {
	return &apiClient{base: base, token: token, http: &http.Client{Timeout: 10 * time.Second}}
}

// apiError is a non-2xx answer.
type apiError struct {
	Status int
	Body   string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, strings.TrimSpace(e.Body))
}

func (c *apiClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return &apiError{Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}

// ensureProjection registers p; an existing projection of that name is left as it is.
func (c *apiClient) ensureProjection(ctx context.Context, p projectionDef) (created bool, err error) {
	err = c.do(ctx, http.MethodPost, "/v1/projections", p, nil)
	var ae *apiError
	if err != nil && asAPIError(err, &ae) && ae.Status == http.StatusConflict {
		return false, nil
	}
	return err == nil, err
}

func asAPIError(err error, target **apiError) bool {
	ae, ok := err.(*apiError)
	if ok {
		*target = ae
	}
	return ok
}

func (c *apiClient) status(ctx context.Context, name string) (projectionStatus, error) {
	var st projectionStatus
	err := c.do(ctx, http.MethodGet, "/v1/projections/"+name+"/status", nil, &st)
	return st, err
}

// waitLive prints the backfills' progress until every demo projection has a live generation
// and no build running, and returns each one's generation.
func waitLive(ctx context.Context, api *apiClient, say func(string, ...any), uiURL string) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	gens := map[string]int64{}
	printedURL := map[string]bool{}
	last := map[string]string{}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		done := 0
		for _, p := range demoProjections {
			st, err := api.status(ctx, p.Name)
			if err != nil {
				return nil, fmt.Errorf("control-plane: status of %s: %w", p.Name, err)
			}
			line := ""
			if r := st.Running; r != nil {
				if !printedURL[p.Name] && r.Workflow.UIURL != "" {
					say("      %s: workflow %s  %s", p.Name, r.Workflow.WorkflowID, r.Workflow.UIURL)
					printedURL[p.Name] = true
				}
				line = fmt.Sprintf("      %s: g%d %-12s %8d records  offset %d/%d  %.0f rec/s",
					p.Name, r.Generation, r.Phase, r.Backfill.RecordsDone, r.Backfill.Offset, r.Backfill.EndOffset, r.Backfill.RatePerSec)
				if r.Generation == 0 {
					line = fmt.Sprintf("      %s: allocating a generation", p.Name)
				}
			} else if g := int64(st.Projection.CurrentGeneration); g > 0 {
				gens[p.Name] = g
				line = fmt.Sprintf("      %s: g%d live", p.Name, g)
				done++
			}
			for _, g := range st.Generations {
				if g.State == "failed" && int64(g.Generation) > gens[p.Name] {
					return nil, fmt.Errorf("control-plane: %s generation %d failed (see the Temporal UI at %s)", p.Name, g.Generation, uiURL)
				}
			}
			if line != "" && line != last[p.Name] {
				say("%s", line)
				last[p.Name] = line
			}
		}
		if done == len(demoProjections) {
			return gens, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("control-plane: projections not live in time (see the Temporal UI at %s): %w", uiURL, ctx.Err())
		case <-tick.C:
		}
	}
}
