package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
)

// Defaults of the status command.
const (
	DefaultURL     = "http://127.0.0.1:58091" // the local stack's control-plane REST address
	DefaultMaxLag  = 1000
	DefaultMaxAge  = time.Minute
	DefaultTimeout = 10 * time.Second
)

// Environment variables the command reads.
const (
	EnvURL       = "DISTCACHE_URL"
	EnvToken     = "DISTCACHE_TOKEN"
	EnvTokenFile = "DISTCACHE_TOKEN_FILE"
)

// errUnreachable marks an API that does not answer at all (-if-up skips it).
var errUnreachable = errors.New("the control-plane does not answer")

func runStatus(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("distcache status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseURL := fs.String("url", "", "control-plane REST base URL (default $"+EnvURL+", else "+DefaultURL+")")
	tokenFile := fs.String("token-file", "", "file holding the bearer token (default $"+EnvTokenFile+"; $"+EnvToken+" wins over both)")
	caFile := fs.String("ca-file", "", "PEM CA bundle to trust for an https URL")
	maxLag := fs.Int64("max-lag", DefaultMaxLag, "a lag above this many records is yellow")
	maxAge := fs.Duration("max-age", DefaultMaxAge, "records waiting behind a newest change older than this is red")
	color := fs.String("color", "auto", "auto (a terminal without NO_COLOR), always or never")
	timeout := fs.Duration("timeout", DefaultTimeout, "bound on the whole command")
	ifUp := fs.Bool("if-up", false, "when the control-plane does not answer, say so and exit 0")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("status takes no arguments, got %q", fs.Args())
	}
	var useColor bool
	switch *color {
	case "auto":
		useColor = getenv("NO_COLOR") == "" && isTerminal(stdout)
	case "always":
		useColor = true
	case "never":
	default:
		return fmt.Errorf("-color %q: want auto, always or never", *color)
	}
	if *baseURL == "" {
		*baseURL = getenv(EnvURL)
	}
	if *baseURL == "" {
		*baseURL = DefaultURL
	}
	if *tokenFile == "" {
		*tokenFile = getenv(EnvTokenFile)
	}
	token, tokenErr := readToken(getenv(EnvToken), *tokenFile)
	if tokenErr != nil && !errors.Is(tokenErr, os.ErrNotExist) {
		return tokenErr
	}
	c, err := newClient(*baseURL, token, *caFile)
	if err != nil {
		return err
	}
	if tokenErr != nil {
		// A missing token file matters only if the API answers (and then it refuses): -if-up
		// against a stack that is not running must not fail on it.
		c.noToken = tokenErr.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	statuses, err := c.allStatuses(ctx)
	if errors.Is(err, errUnreachable) && *ifUp {
		fmt.Fprintf(stdout, "control-plane at %s does not answer: no projection status\n", c.base)
		return nil
	}
	if err != nil {
		return err
	}
	rows := Rows(statuses, Thresholds{MaxLag: *maxLag, MaxAge: *maxAge}, time.Now())
	if err := Render(stdout, rows, useColor); err != nil {
		return err
	}
	for _, r := range rows {
		if r.Health != Healthy {
			return errUnhealthy
		}
	}
	return nil
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// readToken returns the token from env, else the first line of file; "" when neither is set.
func readToken(env, file string) (string, error) {
	if tok := strings.TrimSpace(env); tok != "" {
		return tok, nil
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read the token file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if tok := strings.TrimSpace(line); tok != "" {
		return tok, nil
	}
	return "", fmt.Errorf("token file %s is empty", file)
}

// client calls the control-plane's REST API.
type client struct {
	base  string
	token string
	http  *http.Client
	// noToken says why there is no token, for a refusal's message ("" when none is missing).
	noToken string
}

func newClient(base, token, caFile string) (*client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("-url %q: want http(s)://host:port", base)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read the CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &client{base: strings.TrimRight(base, "/"), token: token, http: &http.Client{Transport: tr}}, nil
}

// allStatuses lists every projection (every page) and asks each its status, in name order.
func (c *client) allStatuses(ctx context.Context) ([]*pb.ProjectionStatus, error) {
	var (
		names []string
		page  string
	)
	for {
		q := url.Values{"page_size": {"500"}}
		if page != "" {
			q.Set("page_token", page)
		}
		var resp pb.ListProjectionsResponse
		if err := c.get(ctx, "/v1/projections?"+q.Encode(), &resp); err != nil {
			return nil, fmt.Errorf("list projections: %w", err)
		}
		for _, p := range resp.GetProjections() {
			names = append(names, p.GetDefinition().GetName())
		}
		if page = resp.GetNextPageToken(); page == "" {
			break
		}
	}
	out := make([]*pb.ProjectionStatus, 0, len(names))
	for _, name := range names {
		var st pb.ProjectionStatus
		err := c.get(ctx, "/v1/projections/"+url.PathEscape(name)+"/status", &st)
		var apiErr *apiError
		if errors.As(err, &apiErr) && apiErr.code == http.StatusNotFound {
			continue // deleted since the list
		}
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", name, err)
		}
		out = append(out, &st)
	}
	return out, nil
}

// apiError is an answer other than 200: its HTTP status and the API's message.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.code, e.msg) }

func (c *client) get(ctx context.Context, path string, into proto.Message) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w at %s: %w", errUnreachable, c.base, ctx.Err())
		}
		return fmt.Errorf("%w at %s: %w", errUnreachable, c.base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var st struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(firstLine(body))
		if json.Unmarshal(body, &st) == nil && st.Message != "" {
			msg = st.Message // a google.rpc.Status
		}
		switch {
		case resp.StatusCode == http.StatusUnauthorized && c.noToken != "":
			msg += " (no token: " + c.noToken + ")"
		case resp.StatusCode == http.StatusUnauthorized && c.token == "":
			msg += " (no token: set " + EnvToken + " or -token-file)"
		}
		return &apiError{code: resp.StatusCode, msg: msg}
	}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, into); err != nil {
		return fmt.Errorf("decode the answer: %w", err)
	}
	return nil
}

func firstLine(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	if sc.Scan() {
		return sc.Text()
	}
	return ""
}
