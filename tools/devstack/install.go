package devstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"
)

// ErrMissing is returned when a program the stack needs is not installed and cannot be.
var ErrMissing = errors.New("missing program")

// debianPackages maps each program the stack runs to the Debian package that ships it.
var debianPackages = map[string]string{
	"redis-server":   "redis-server",
	"redis-cli":      "redis-server",
	"redis-sentinel": "redis-sentinel",
	"initdb":         "postgresql",
	"postgres":       "postgresql",
}

var installMu sync.Mutex

// EnsureInstalled makes sure PostgreSQL and Redis are installed. When a program is missing and
// this runs as root on a Debian-like system it installs the package with apt-get; otherwise it
// returns an error that names the package to install.
func EnsureInstalled(ctx context.Context) error {
	installMu.Lock()
	defer installMu.Unlock()
	var missing []string
	seen := map[string]bool{}
	for prog, pkg := range debianPackages {
		if _, err := findProgram(prog); err != nil && !seen[pkg] {
			seen[pkg] = true
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	sort.Strings(missing)
	if err := aptInstall(ctx, missing); err != nil {
		return err
	}
	for prog := range debianPackages {
		if _, err := findProgram(prog); err != nil {
			return fmt.Errorf("%w: %s still not found after installing %v", ErrMissing, prog, missing)
		}
	}
	return nil
}

// aptInstall installs Debian packages with apt-get when running as root, or returns an error
// that names them.
func aptInstall(ctx context.Context, pkgs []string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: install the Debian packages %v (apt-get install -y %s)", ErrMissing, pkgs, joinWords(pkgs))
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("%w: no apt-get on this system; install %v with the system's package manager", ErrMissing, pkgs)
	}
	// Test packages install in parallel (chromium for the Temporal UI test, prometheus for the
	// dashboards' test, on a clean machine at once): apt-get refuses a second run while one holds
	// dpkg's lock, so this process's installs wait for each other's through a lock file of their
	// own, and for any other apt-get through dpkg's lock timeout.
	unlock, err := lockFile(ctx, filepath.Join(os.TempDir(), "distcache-apt.lock"))
	if err != nil {
		return fmt.Errorf("apt-get install %v: %w", pkgs, err)
	}
	defer unlock()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	wait := []string{"-o", "DPkg::Lock::Timeout=600"}
	for _, args := range [][]string{append([]string{"update", "-qq"}, wait...), append(append([]string{"install", "-y", "-qq"}, wait...), pkgs...)} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", args[0], err, out.String())
		}
	}
	return nil
}

// lockFile takes an exclusive lock on path (created if missing), waiting until it is free or ctx
// ends, and returns its release.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("waiting for %s (another install runs): %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond): // polling the lock: flock cannot wait on a context
		}
	}
}

// chromiumNames are the names a Chromium-based browser is installed under.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// EnsureChromium returns the path of a headless-capable Chromium (for screenshots of the Temporal
// UI), installing Debian's chromium package as EnsureInstalled installs PostgreSQL and Redis
// when none is found: with apt-get when running as root, otherwise an error naming the package.
func EnsureChromium(ctx context.Context) (string, error) {
	installMu.Lock()
	defer installMu.Unlock()
	find := func() (string, bool) {
		for _, n := range chromiumNames {
			if p, err := exec.LookPath(n); err == nil {
				return p, true
			}
		}
		return "", false
	}
	if p, ok := find(); ok {
		return p, nil
	}
	if err := aptInstall(ctx, []string{"chromium"}); err != nil {
		return "", err
	}
	if p, ok := find(); ok {
		return p, nil
	}
	return "", fmt.Errorf("%w: chromium still not found after installing it", ErrMissing)
}

// Prometheus is where Prometheus's server and promtool are installed.
type Prometheus struct {
	Server, Promtool string
}

// EnsurePrometheus returns the paths of Prometheus's server and promtool (for the tests that
// evaluate the dashboards' queries and the alert rules), installing Debian's prometheus package
// as EnsureInstalled installs PostgreSQL and Redis when either is missing: with apt-get when
// running as root, otherwise an error naming the package. The package's own service is not
// left running: the tests start their own server on a free port.
func EnsurePrometheus(ctx context.Context) (Prometheus, error) {
	installMu.Lock()
	defer installMu.Unlock()
	find := func() (Prometheus, bool) {
		s, err1 := exec.LookPath("prometheus")
		t, err2 := exec.LookPath("promtool")
		return Prometheus{Server: s, Promtool: t}, err1 == nil && err2 == nil
	}
	if p, ok := find(); ok {
		return p, nil
	}
	if err := aptInstall(ctx, []string{"prometheus"}); err != nil {
		return Prometheus{}, err
	}
	stopPackageService(ctx, "prometheus")
	if p, ok := find(); ok {
		return p, nil
	}
	return Prometheus{}, fmt.Errorf("%w: prometheus or promtool still not found after installing the prometheus package", ErrMissing)
}

// stopPackageService stops a service a Debian package may have started on installing (with
// systemd as PID 1; elsewhere nothing started it). Best effort: a failure changes nothing the
// tests rely on, since they use their own ports.
func stopPackageService(ctx context.Context, name string) {
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		return
	}
	for _, args := range [][]string{{"stop", name}, {"disable", name}} {
		_ = exec.CommandContext(ctx, "systemctl", args...).Run()
	}
}

func joinWords(ws []string) string {
	var b bytes.Buffer
	for i, w := range ws {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(w)
	}
	return b.String()
}

// findProgram finds a program on PATH or in PostgreSQL's versioned bin directories.
func findProgram(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) > 0 {
		sort.Strings(matches)
		return matches[len(matches)-1], nil // the newest major version
	}
	return "", fmt.Errorf("%w: %s (Debian package %s)", ErrMissing, name, debianPackages[name])
}

// postgresUser returns the uid and gid to run PostgreSQL as: the postgres user when running as
// root (PostgreSQL refuses root), otherwise the current user (-1, -1).
func postgresUser() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return -1, -1, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, fmt.Errorf("running as root needs the postgres user (Debian package postgresql): %w", err)
	}
	var id, g int
	if _, err := fmt.Sscan(u.Uid, &id); err != nil {
		return 0, 0, fmt.Errorf("postgres uid %q: %w", u.Uid, err)
	}
	if _, err := fmt.Sscan(u.Gid, &g); err != nil {
		return 0, 0, fmt.Errorf("postgres gid %q: %w", u.Gid, err)
	}
	return id, g, nil
}
