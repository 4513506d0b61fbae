// Command healthprobe checks one HTTP health endpoint and exits 0 when it answers 2xx, 1
// otherwise. It is the HEALTHCHECK of the distcache images, which are distroless and have no
// shell or curl:
//
//	healthprobe [-timeout 2s] http://127.0.0.1:58081/readyz
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "healthprobe:", err)
		os.Exit(1)
	}
}

// ErrUnhealthy is returned when the endpoint answers with a status outside 2xx.
var ErrUnhealthy = errors.New("unhealthy")

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthprobe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: healthprobe [-timeout 2s] URL")
	}
	target := fs.Arg(0)
	if u, err := url.Parse(target); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", target)
	}
	if *timeout <= 0 {
		return fmt.Errorf("-timeout %s: want a positive duration", *timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%w: %s answered %s: %s", ErrUnhealthy, target, resp.Status, body)
	}
	return nil
}
