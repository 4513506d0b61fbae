package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ProjectionDef is a projection as the control-plane's REST API takes it.
type ProjectionDef struct {
	Name         string   `json:"name"`
	Model        string   `json:"model"`
	KeyTemplate  string   `json:"keyTemplate"`
	LowercaseKey bool     `json:"lowercaseKey,omitempty"`
	Fields       []string `json:"fields"`
}

// Projection is the sample projection: items by their key, with the sequence number the writer
// bumps.
var Projection = ProjectionDef{Name: "items_by_k", Model: "items", KeyTemplate: "{k}", Fields: []string{"id", "k", "seq", "pad"}}

// Int64 decodes a protojson int64, which is a JSON string, or a plain number.
type Int64 int64

// UnmarshalJSON implements json.Unmarshaler.
func (v *Int64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("decode int64 %s: %w", b, err)
	}
	*v = Int64(n)
	return nil
}

// BackfillProgress is a build's backfill progress as the status reports it.
type BackfillProgress struct {
	RecordsDone Int64   `json:"records_done"`
	Offset      Int64   `json:"offset"`
	EndOffset   Int64   `json:"end_offset"`
	RatePerSec  float64 `json:"rate_per_sec"`
}

// ProjectionStatus is the answer of GET /v1/projections/{name}/status (the parts used here).
type ProjectionStatus struct {
	Projection struct {
		CurrentGeneration Int64 `json:"current_generation"`
	} `json:"projection"`
	Generations []struct {
		Generation Int64            `json:"generation"`
		State      string           `json:"state"`
		Backfill   BackfillProgress `json:"backfill"`
	} `json:"generations"`
	// Running is the build in progress, if any.
	Running *struct {
		Generation Int64            `json:"generation"`
		Phase      string           `json:"phase"`
		Backfill   BackfillProgress `json:"backfill"`
		Workflow   struct {
			WorkflowID string `json:"workflow_id"`
			UIURL      string `json:"ui_url"`
		} `json:"workflow"`
	} `json:"running"`
}

// HTTPError is a non-2xx answer of the API.
type HTTPError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, strings.TrimSpace(e.Body))
}

// API speaks the control-plane's REST API.
type API struct {
	base, token string
	http        *http.Client
}

// NewAPI returns a client of the REST API at base ("http://host:port") that sends token.
func NewAPI(base, token string) *API {
	return &API{base: base, token: token, http: &http.Client{Timeout: 10 * time.Second}}
}

func (a *API) do(ctx context.Context, method, path string, body, out any) error {
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
		return &HTTPError{Method: method, Path: path, Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return nil
}

// CreateProjection registers p; an existing projection of that name is an *HTTPError with status
// 409.
func (a *API) CreateProjection(ctx context.Context, p ProjectionDef) error {
	return a.do(ctx, http.MethodPost, "/v1/projections", p, nil)
}

// EnsureProjection registers p and reports true, or reports false when a projection of that name
// exists (it is left as it is).
func (a *API) EnsureProjection(ctx context.Context, p ProjectionDef) (created bool, err error) {
	err = a.CreateProjection(ctx, p)
	if he := (*HTTPError)(nil); errors.As(err, &he) && he.Status == http.StatusConflict {
		return false, nil
	}
	return err == nil, err
}

// Status returns a projection's status.
func (a *API) Status(ctx context.Context, name string) (ProjectionStatus, error) {
	var st ProjectionStatus
	err := a.do(ctx, http.MethodGet, "/v1/projections/"+name+"/status", nil, &st)
	return st, err
}

// WaitLive polls the projections' status until each one has a live generation and no build
// running, and returns each one's live generation. A generation newer than the live one that
// failed ends the wait with an error; so does timeout. say, when not nil, receives a line whenever
// a projection's progress changes (its workflow's UI link once, then phase, records and offsets).
func (a *API) WaitLive(ctx context.Context, names []string, timeout time.Duration, say func(string, ...any)) (map[string]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if say == nil {
		say = func(string, ...any) {}
	}
	gens := map[string]int64{}
	printedURL := map[string]bool{}
	last := map[string]string{}
	var lastErr error
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		done := 0
		for _, name := range names {
			st, err := a.Status(ctx, name)
			if err != nil {
				lastErr = err // the control-plane may be restarting: poll on until the timeout
				continue
			}
			line := ""
			if r := st.Running; r != nil {
				if !printedURL[name] && r.Workflow.UIURL != "" {
					say("%s: workflow %s  %s", name, r.Workflow.WorkflowID, r.Workflow.UIURL)
					printedURL[name] = true
				}
				line = fmt.Sprintf("%s: g%d %-12s %8d records  offset %d/%d  %.0f rec/s",
					name, r.Generation, r.Phase, r.Backfill.RecordsDone, r.Backfill.Offset, r.Backfill.EndOffset, r.Backfill.RatePerSec)
				if r.Generation == 0 {
					line = fmt.Sprintf("%s: allocating a generation", name)
				}
			} else if g := int64(st.Projection.CurrentGeneration); g > 0 {
				gens[name] = g
				line = fmt.Sprintf("%s: g%d live", name, g)
				done++
			}
			for _, g := range st.Generations {
				if g.State == "failed" && int64(g.Generation) > gens[name] {
					return nil, fmt.Errorf("projection %s: generation %d failed", name, g.Generation)
				}
			}
			if line != "" && line != last[name] {
				say("%s", line)
				last[name] = line
			}
		}
		if done == len(names) {
			return gens, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("projections %v not live in %v (last error: %v): %w", names, timeout, lastErr, ctx.Err())
		case <-tick.C:
		}
	}
}
