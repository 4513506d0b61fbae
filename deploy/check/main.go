// Command deploycheck validates distcache's deployment files without a Docker engine or a
// Kubernetes cluster; `make deploy-check` (deploy/check.mk) runs it:
//
//	deploycheck compose FILE...     load each compose file with compose-go and check its rules
//	deploycheck manifests FILE...   decode rendered manifests strictly into the Kubernetes API
//	                                types and check the chart's rules ("-" reads stdin)
//	deploycheck env SERVICES FILE... check that every PUBLISHER_/PRODUCER_/CONTROLPLANE_
//	                                variable the files set is read by its service under SERVICES
//
// It lives in its own module, outside go.work, so compose-go's and Kubernetes' dependencies
// never move the services' dependency graph; the same module pins helm as a tool.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/distcache/distcache/deploy/check/composecheck"
	"github.com/distcache/distcache/deploy/check/envcheck"
	"github.com/distcache/distcache/deploy/check/manifestcheck"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycheck:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  deploycheck compose FILE...
  deploycheck manifests FILE...   ("-" reads stdin)
  deploycheck env SERVICES_DIR FILE...`

// errUsage is wrapped by the error for a bad command line.
var errUsage = errors.New("bad arguments")

func usageError() error { return fmt.Errorf("%w\n%s", errUsage, usage) }

func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) < 2 {
		return usageError()
	}
	cmd, files := args[0], args[1:]
	if cmd == "env" {
		if len(files) < 2 {
			return usageError()
		}
		if err := envcheck.Check(files[0], files[1:]...); err != nil {
			fmt.Fprintf(stdout, "FAIL env %s\n", strings.Join(files[1:], " "))
			return err
		}
		fmt.Fprintf(stdout, "ok   env: every service variable in %d files is read by its service\n", len(files)-1)
		return nil
	}
	var failed []string
	for _, f := range files {
		var err error
		switch cmd {
		case "compose":
			// Interpolate from an empty environment: the file must carry its own defaults.
			err = composecheck.Check(ctx, f, map[string]string{})
		case "manifests":
			err = checkManifests(f, stdin)
		default:
			return usageError()
		}
		if err != nil {
			failed = append(failed, f)
			fmt.Fprintf(stdout, "FAIL %s %s\n", cmd, f)
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(stdout, "  %s\n", line)
			}
			continue
		}
		fmt.Fprintf(stdout, "ok   %s %s\n", cmd, f)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s: %d of %d files failed: %s", cmd, len(failed), len(files), strings.Join(failed, ", "))
	}
	return nil
}

func checkManifests(path string, stdin io.Reader) error {
	if path == "-" {
		return manifestcheck.Check(stdin)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return manifestcheck.Check(f)
}
