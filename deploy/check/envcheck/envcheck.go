// Package envcheck catches drift between the deployment files and the services: every
// PUBLISHER_*, PRODUCER_*, CONTROLPLANE_* and EDGE_* variable that a compose file or a rendered
// manifest sets must be read by the service that owns the prefix. A renamed or misspelt
// variable would otherwise be ignored silently by the service, which falls back to its
// default.
//
// A variable is read when its whole name is a Go string literal in the service's non-test
// sources, or when it is one of the shared configuration library's: the service imports a
// package of libs/svcconfig (kafkaconf, redisconf) whose non-test sources hold the name
// without its prefix as a literal ("KAFKA_BROKERS"), and the service's sources hold the
// prefix itself as a literal ("PRODUCER", given to envconf.New).
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
// that reads it. The example edge service (compose runs it) lives beside the services, in
// examples/.
var Services = map[string]string{
	"PUBLISHER_":    "core-publisher",
	"PRODUCER_":     "cache-producer",
	"CONTROLPLANE_": "control-plane",
	"EDGE_":         filepath.Join("..", "examples", "edge-service"),
}

var varPattern = regexp.MustCompile(`\b(PUBLISHER|PRODUCER|CONTROLPLANE|EDGE)_[A-Z0-9_]*[A-Z0-9]\b`)

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

// SharedConfigImport is the import path prefix of the shared configuration library's
// packages; they live in libs/svcconfig next to the services root.
const SharedConfigImport = "github.com/distcache/distcache/libs/svcconfig/"

var sharedImport = regexp.MustCompile(`"` + regexp.QuoteMeta(SharedConfigImport) + `([a-z0-9]+)"`)

// Check reports every variable named in files that its service (under servicesRoot) does
// not read: neither as a string literal of its own non-test Go sources, nor through the
// shared configuration library (servicesRoot/../libs/svcconfig) with the service's prefix.
func Check(servicesRoot string, files ...string) error {
	vars, err := Variables(files...)
	if err != nil {
		return err
	}
	sharedRoot := filepath.Join(servicesRoot, "..", "libs", "svcconfig")
	sources := map[string]string{} // service dir, or shared package dir -> concatenated non-test Go source
	source := func(dir string) (string, error) {
		if src, ok := sources[dir]; ok {
			return src, nil
		}
		src, err := goSources(dir)
		if err != nil {
			return "", err
		}
		sources[dir] = src
		return src, nil
	}
	var errs []error
	for _, v := range vars {
		var dir, prefix string
		for p, d := range Services {
			if strings.HasPrefix(v, p) {
				dir, prefix = d, p
			}
		}
		src, err := source(filepath.Join(servicesRoot, dir))
		if err != nil {
			return err
		}
		if strings.Contains(src, `"`+v+`"`) {
			continue
		}
		shared := false
		if strings.Contains(src, `"`+strings.TrimSuffix(prefix, "_")+`"`) {
			for _, m := range sharedImport.FindAllStringSubmatch(src, -1) {
				psrc, err := source(filepath.Join(sharedRoot, m[1]))
				if err != nil {
					return err
				}
				if strings.Contains(psrc, `"`+strings.TrimPrefix(v, prefix)+`"`) {
					shared = true
					break
				}
			}
		}
		if !shared {
			errs = append(errs, fmt.Errorf("%w: %s (%s)", ErrUnknownVariable, v, filepath.Join("services", dir)))
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
