// Package composecheck loads a docker compose file with compose-spec/compose-go (the loader
// docker compose itself uses) and checks the rules deploy/compose promises, without a Docker
// engine:
//
//   - every long-running service has a healthcheck; a one-shot job (a service some other
//     service waits for with condition service_completed_successfully) is exempt;
//   - every image is pinned: a version tag (one with a digit in it, not "latest") or a digest,
//     unless the service is built here, in which case its Dockerfile must exist and its base
//     images be pinned and its final stage must not run as root (see CheckDockerfile);
//   - every depends_on entry names a condition (service_healthy or
//     service_completed_successfully), and service_healthy points at a service that has a
//     healthcheck;
//   - data lives in named volumes declared at top level; bind mounts are read-only
//     configuration.
package composecheck

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// Sentinel errors; every problem found wraps one of them (errors.Is).
var (
	ErrLoad             = errors.New("compose file does not load")
	ErrNoHealthcheck    = errors.New("no healthcheck")
	ErrUnpinnedImage    = errors.New("image not pinned")
	ErrDependsCondition = errors.New("depends_on without a usable condition")
	ErrVolume           = errors.New("volume rule broken")
	ErrBuild            = errors.New("build rule broken")
	ErrDockerfileUser   = errors.New("image runs as root")
	ErrPublicPort       = errors.New("port published beyond loopback")
)

// Problem is one broken rule of one service.
type Problem struct {
	Service string
	Err     error // wraps a sentinel
}

func (p *Problem) Error() string { return "service " + p.Service + ": " + p.Err.Error() }
func (p *Problem) Unwrap() error { return p.Err }

// Check loads the compose file at path (see Load) and returns every broken rule, joined, or
// nil.
func Check(ctx context.Context, path string, env map[string]string) error {
	project, err := Load(ctx, path, env)
	if err != nil {
		return err
	}
	return CheckProject(project)
}

// Load loads the compose file at path, interpolating only from env, never from the process
// environment, so the result does not depend on who runs it. Every profile is enabled, so a
// service started only on request (profiles: [...]) is checked like the others.
func Load(ctx context.Context, path string, env map[string]string) (*types.Project, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLoad, err)
	}
	content, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrLoad, err)
	}
	details := types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs, Content: content}},
		Environment: types.Mapping(env),
	}
	project, err := loader.LoadWithContext(ctx, details, func(o *loader.Options) {
		o.SetProjectName("deploycheck", false)
		o.ResolvePaths = true
		o.Profiles = []string{"*"}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLoad, path, err)
	}
	return project, nil
}

// CheckProject applies the rules to a loaded project.
func CheckProject(p *types.Project) error {
	if len(p.Services) == 0 {
		return fmt.Errorf("%w: no services", ErrLoad)
	}
	oneShot := map[string]bool{}
	for _, s := range p.Services {
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully {
				oneShot[dep] = true
			}
		}
	}
	names := make([]string, 0, len(p.Services))
	for name := range p.Services {
		names = append(names, name)
	}
	sort.Strings(names)

	var errs []error
	fail := func(svc string, sentinel error, format string, args ...any) {
		errs = append(errs, &Problem{Service: svc, Err: fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)})
	}
	for _, name := range names {
		s := p.Services[name]
		// Healthcheck.
		if !hasHealthcheck(s) && !oneShot[name] {
			fail(name, ErrNoHealthcheck, "a long-running service needs a healthcheck (or is a one-shot job that a dependant waits for with service_completed_successfully)")
		}
		// Image or build.
		if s.Build != nil {
			if err := checkBuild(s.Build); err != nil {
				errs = append(errs, &Problem{Service: name, Err: err})
			}
		} else if err := CheckImageRef(s.Image, true); err != nil {
			errs = append(errs, &Problem{Service: name, Err: err})
		}
		// depends_on conditions.
		deps := make([]string, 0, len(s.DependsOn))
		for dep := range s.DependsOn {
			deps = append(deps, dep)
		}
		sort.Strings(deps)
		for _, dep := range deps {
			switch cond := s.DependsOn[dep].Condition; cond {
			case types.ServiceConditionHealthy:
				if target, ok := p.Services[dep]; ok && !hasHealthcheck(target) {
					fail(name, ErrDependsCondition, "waits for %s to be healthy, but %s has no healthcheck", dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
			default:
				fail(name, ErrDependsCondition, "depends_on %s has condition %q; use service_healthy or service_completed_successfully", dep, cond)
			}
		}
		// Published ports: on loopback only, so a laptop's stack (development tokens, no TLS) is
		// not reachable from its network.
		for _, port := range s.Ports {
			if port.Published != "" && port.HostIP != "127.0.0.1" && port.HostIP != "::1" {
				fail(name, ErrPublicPort, "port %s publishes on %q: bind it to 127.0.0.1 (\"127.0.0.1:%s:%d\")", port.Published, port.HostIP, port.Published, port.Target)
			}
		}
		// Volumes.
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeVolume:
				if v.Source == "" {
					fail(name, ErrVolume, "anonymous volume at %s: use a named volume", v.Target)
				} else if _, ok := p.Volumes[v.Source]; !ok {
					fail(name, ErrVolume, "volume %q is not declared under top-level volumes", v.Source)
				}
			case types.VolumeTypeBind:
				if !v.ReadOnly {
					fail(name, ErrVolume, "bind mount %s -> %s is writable: data belongs in a named volume, configuration mounts read-only (:ro)", v.Source, v.Target)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func hasHealthcheck(s types.ServiceConfig) bool {
	h := s.HealthCheck
	if h == nil || h.Disable || len(h.Test) == 0 {
		return false
	}
	return h.Test[0] != "NONE"
}

func checkBuild(b *types.BuildConfig) error {
	if b.Context == "" {
		return fmt.Errorf("%w: build has no context", ErrBuild)
	}
	if strings.Contains(b.Context, "://") {
		return fmt.Errorf("%w: remote build context %q: build from this repository", ErrBuild, b.Context)
	}
	if b.DockerfileInline != "" {
		return fmt.Errorf("%w: inline Dockerfile: keep Dockerfiles under deploy/docker", ErrBuild)
	}
	dockerfile := b.Dockerfile
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if !filepath.IsAbs(dockerfile) {
		dockerfile = filepath.Join(b.Context, dockerfile)
	}
	src, err := os.ReadFile(dockerfile)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBuild, err)
	}
	if err := CheckDockerfile(string(src)); err != nil {
		return fmt.Errorf("%s: %w", dockerfile, err)
	}
	return nil
}

// CheckImageRef reports whether ref is pinned: it has a digest, or a tag other than "latest".
// With versionTag, the tag must also look like a version (hold a digit): "redis:7.4.2-alpine"
// passes, "redis:alpine" does not.
func CheckImageRef(ref string, versionTag bool) error {
	if ref == "" {
		return fmt.Errorf("%w: no image and no build", ErrUnpinnedImage)
	}
	if strings.ContainsAny(ref, "$ \t") {
		return fmt.Errorf("%w: %q is not a plain image reference", ErrUnpinnedImage, ref)
	}
	name, digest, hasDigest := strings.Cut(ref, "@")
	if hasDigest {
		if !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
			return fmt.Errorf("%w: %q has a malformed digest", ErrUnpinnedImage, ref)
		}
		return nil
	}
	last := name[strings.LastIndexByte(name, '/')+1:] // the tag follows the last path element
	_, tag, hasTag := strings.Cut(last, ":")
	switch {
	case !hasTag || tag == "":
		return fmt.Errorf("%w: %q has no tag (it means latest): pin a version", ErrUnpinnedImage, ref)
	case tag == "latest":
		return fmt.Errorf("%w: %q uses latest: pin a version", ErrUnpinnedImage, ref)
	case versionTag && !strings.ContainsAny(tag, "0123456789"):
		return fmt.Errorf("%w: %q: tag %q is not a version", ErrUnpinnedImage, ref, tag)
	}
	return nil
}

// CheckDockerfile checks a Dockerfile's FROM lines (base images pinned; ARG defaults declared
// before the first FROM are substituted; a FROM naming an earlier stage is fine) and that its
// final stage switches to a user other than root.
func CheckDockerfile(src string) error {
	args := map[string]string{}
	stages := map[string]bool{}
	var errs []error
	var finalUser string
	sawFrom := false
	for _, line := range logicalLines(src) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		switch strings.ToUpper(fields[0]) {
		case "ARG":
			if !sawFrom && len(fields) >= 2 {
				k, v, _ := strings.Cut(fields[1], "=")
				args[k] = strings.Trim(v, `"'`)
			}
		case "FROM":
			sawFrom = true
			finalUser = ""
			rest := fields[1:]
			for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
				rest = rest[1:]
			}
			if len(rest) == 0 {
				errs = append(errs, fmt.Errorf("%w: FROM without an image", ErrUnpinnedImage))
				continue
			}
			image := expandArgs(rest[0], args)
			if !stages[strings.ToLower(image)] && image != "scratch" {
				if err := CheckImageRef(image, false); err != nil {
					errs = append(errs, fmt.Errorf("FROM %s: %w", rest[0], err))
				}
			}
			// A named stage can be the base of a later FROM.
			if len(rest) >= 3 && strings.EqualFold(rest[1], "AS") {
				stages[strings.ToLower(rest[2])] = true
			}
		case "USER":
			if len(fields) >= 2 {
				finalUser = fields[1]
			}
		}
	}
	if !sawFrom {
		errs = append(errs, fmt.Errorf("%w: no FROM line", ErrBuild))
	}
	user, _, _ := strings.Cut(finalUser, ":")
	if slices.Contains([]string{"", "root", "0"}, user) {
		errs = append(errs, fmt.Errorf("%w: the final stage needs a USER other than root (have %q)", ErrDockerfileUser, finalUser))
	}
	return errors.Join(errs...)
}

// logicalLines joins backslash-continued lines and drops comments and parser directives.
func logicalLines(src string) []string {
	var out []string
	var cur strings.Builder
	for _, raw := range strings.Split(src, "\n") {
		line := strings.TrimRight(raw, " \t\r")
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur.WriteString(strings.TrimSuffix(line, `\`))
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// expandArgs substitutes ${NAME} and $NAME with the ARG defaults.
func expandArgs(s string, args map[string]string) string {
	return os.Expand(s, func(k string) string { return args[k] })
}
