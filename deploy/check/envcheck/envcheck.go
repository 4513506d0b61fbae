// Package envcheck catches drift between the deployment files and the services: every
// PUBLISHER_*, PRODUCER_* and CONTROLPLANE_* variable that a compose file or a rendered
// manifest sets must be read by the service that owns the prefix, i.e. appear as a Go string
// literal in that service's non-test sources. A renamed or misspelt variable would otherwise
// be ignored silently by the service, which falls back to its default.
package envcheck

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// ErrUnknownVariable is wrapped by every variable no service reads.
var ErrUnknownVariable = errors.New("variable not read by its service")

// Services maps a variable prefix to the directory, under the services root, of the service
// that reads it.
var Services = map[string]string{
	"PUBLISHER_":    "core-publisher",
	"PRODUCER_":     "cache-producer",
	"CONTROLPLANE_": "control-plane",
}

var varPattern = regexp.MustCompile(`\b(PUBLISHER|PRODUCER|CONTROLPLANE)_[A-Z0-9_]*[A-Z0-9]\b`)

// Variables returns the distinct service variables named in the files, sorted.
func Variables(files ...string) ([]string, error) {
	set := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, m := range varPattern.FindAllString(string(b), -1) {
			set[m] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out, nil
}

// Check reports every variable named in files that its service's Go sources (under
// servicesRoot) do not contain as a string literal.
func Check(servicesRoot string, files ...string) error {
	vars, err := Variables(files...)
	if err != nil {
		return err
	}
	sources := map[string]string{} // service dir -> concatenated non-test Go source
	var errs []error
	for _, v := range vars {
		var dir string
		for prefix, d := range Services {
			if strings.HasPrefix(v, prefix) {
				dir = d
			}
		}
		src, ok := sources[dir]
		if !ok {
			src, err = goSources(filepath.Join(servicesRoot, dir))
			if err != nil {
				return err
			}
			sources[dir] = src
		}
		// A literal of the whole name, or of a name its config builds from the prefix
		// ("PRODUCER_" + "REDIS_ADDR") is not recognised; the services spell names out.
		if !strings.Contains(src, `"`+v+`"`) {
			errs = append(errs, fmt.Errorf("%w: %s (services/%s)", ErrUnknownVariable, v, dir))
		}
	}
	return errors.Join(errs...)
}

func goSources(dir string) (string, error) {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		b.Write(src)
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("read the sources of %s: %w", dir, err)
	}
	if b.Len() == 0 {
		return "", fmt.Errorf("no Go sources in %s", dir)
	}
	return b.String(), nil
}
