package benchrun

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/tools/devstack"
)

// pprofEnv returns the services' *_PPROF_ADDR settings on free loopback ports, and the address
// of each service's profiles by program name.
func pprofEnv() (pub, prod, ctl []string, addrs map[string]string, err error) {
	addrs = map[string]string{}
	env := func(name, variable string) ([]string, error) {
		port, err := devstack.FreePort()
		if err != nil {
			return nil, err
		}
		addrs[name] = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		return []string{variable + "=" + addrs[name]}, nil
	}
	if pub, err = env(pipeline.NamePublisher, "PUBLISHER_PPROF_ADDR"); err != nil {
		return
	}
	if prod, err = env(pipeline.NameProducer, "PRODUCER_PPROF_ADDR"); err != nil {
		return
	}
	ctl, err = env(pipeline.NameControl, "CONTROLPLANE_PPROF_ADDR")
	return
}

// profileRun takes a CPU profile of d from every service (their pprof listeners) and of the
// bench process itself, into dir/<name>.pprof, and writes each one's top functions to
// dir/top.txt. It returns once all are written; run it next to the measured run.
func profileRun(ctx context.Context, dir string, addrs map[string]string, d time.Duration, say func(string, ...any)) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(addrs)+1)
	secs := max(1, int(d.Seconds()))
	for name, addr := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- fetchProfile(ctx, "http://"+addr+"/debug/pprof/profile?seconds="+strconv.Itoa(secs), filepath.Join(dir, name+".pprof"))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.Create(filepath.Join(dir, "bench.pprof"))
		if err != nil {
			errs <- err
			return
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			errs <- fmt.Errorf("bench CPU profile: %w", err)
			return
		}
		select {
		case <-time.After(time.Duration(secs) * time.Second):
		case <-ctx.Done():
		}
		pprof.StopCPUProfile()
		errs <- nil
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	var top strings.Builder
	names := []string{"bench"}
	for n := range addrs {
		names = append(names, n)
	}
	for _, n := range names {
		out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", filepath.Join(dir, n+".pprof")).CombinedOutput()
		if err != nil {
			return fmt.Errorf("go tool pprof %s: %w\n%s", n, err, out)
		}
		fmt.Fprintf(&top, "=== %s\n%s\n", n, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "top.txt"), []byte(top.String()), 0o644); err != nil {
		return err
	}
	say("bench: CPU profiles of the services and the bench in %s (top functions: %s)", dir, filepath.Join(dir, "top.txt"))
	return nil
}

func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("profile %s: %w", url, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("profile %s: %s: %s", url, res.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res.Body); err != nil {
		f.Close()
		return fmt.Errorf("profile %s: %w", url, err)
	}
	return f.Close()
}
