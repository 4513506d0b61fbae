// Package devstack starts the real components of distcache's local stack (PostgreSQL, Redis,
// a Kafka-protocol broker and Temporal's dev server) on loopback ports under a directory of its
// own. The stack CLI (tools/cmd/devstack) uses it with fixed ports and detached processes; tests
// use it through tools/devstacktest with free ports and processes tied to the test binary.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned when a component that is expected to run is not running.
var ErrNotRunning = errors.New("not running")

// Mode says how processes relate to the program that starts them.
type Mode int

const (
	// Attached processes die with the starting process (PR_SET_PDEATHSIG); tests use it so a
	// crashed test binary leaves nothing behind.
	Attached Mode = iota
	// Detached processes live in their own session and outlive the starting program; the stack
	// CLI uses it, and stops them later through their PID files.
	Detached
)

// process is one child program with its log and PID files.
type process struct {
	name    string
	argv    []string
	env     []string
	dir     string // working directory and home of the log and PID files
	mode    Mode
	uid     int // -1: inherit
	gid     int
	logPath string
	pidPath string
	stopSig syscall.Signal // graceful stop signal; SIGTERM when zero

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd exits (Attached mode only)
	pid  int
}

func newProcess(name, dir string, mode Mode, argv ...string) *process {
	return &process{
		name:    name,
		argv:    argv,
		dir:     dir,
		mode:    mode,
		uid:     -1,
		gid:     -1,
		logPath: filepath.Join(dir, name+".log"),
		pidPath: filepath.Join(dir, name+".pid"),
	}
}

// start launches the program; output goes to its log file.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: open log: %w", p.name, err)
	}
	defer logf.Close()
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Dir = p.dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), p.env...)
	attr := &syscall.SysProcAttr{}
	if p.mode == Attached {
		attr.Pdeathsig = syscall.SIGKILL
		attr.Setpgid = true
	} else {
		attr.Setsid = true
	}
	if p.uid >= 0 {
		attr.Credential = &syscall.Credential{Uid: uint32(p.uid), Gid: uint32(p.gid)}
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start %s: %w", p.name, p.argv[0], err)
	}
	p.cmd = cmd
	p.pid = cmd.Process.Pid
	p.done = make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	if err := os.WriteFile(p.pidPath, []byte(strconv.Itoa(p.pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("%s: write pid file: %w", p.name, err)
	}
	return nil
}

// exited reports whether the process has exited.
func (p *process) exited() bool {
	p.mu.Lock()
	done := p.done
	pid := p.pid
	p.mu.Unlock()
	if done != nil {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	return !pidAlive(pid)
}

// PID returns the process id, or 0 when it was never started.
func (p *process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// signal sends sig to the process.
func (p *process) signal(sig syscall.Signal) error {
	pid := p.PID()
	if pid == 0 {
		return fmt.Errorf("%s: %w", p.name, ErrNotRunning)
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("%s: signal %v: %w", p.name, sig, err)
	}
	return nil
}

// stop asks the process to exit with SIGTERM and kills it if it has not exited by the timeout.
func (p *process) stop(timeout time.Duration) error {
	if p.PID() == 0 || p.exited() {
		_ = os.Remove(p.pidPath)
		return nil
	}
	sig := p.stopSig
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	if err := p.signal(sig); err != nil {
		return err
	}
	if !p.waitExit(timeout) {
		if err := p.kill(); err != nil {
			return err
		}
	}
	_ = os.Remove(p.pidPath)
	return nil
}

// kill sends SIGKILL to the process and every process of its group (it leads one: Setpgid or
// Setsid), as a crash of the whole server would, and waits until all of them are gone. Killing
// the group matters for PostgreSQL: backends that outlive their postmaster keep its shared memory
// and make a restart fail.
func (p *process) kill() error {
	pid := p.PID()
	if pid == 0 {
		return nil
	}
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		if err := p.signal(syscall.SIGKILL); err != nil {
			return err
		}
	}
	if !p.waitExit(10 * time.Second) {
		return fmt.Errorf("%s: pid %d survived SIGKILL", p.name, pid)
	}
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(pid) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: processes of group %d survived SIGKILL", p.name, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// groupAlive reports whether any live (non-zombie) process belongs to process group pgid.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		g, err := syscall.Getpgid(pid)
		if err != nil || g != pgid {
			continue
		}
		if pidAlive(pid) {
			return true
		}
	}
	return false
}

func (p *process) waitExit(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if p.exited() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return p.exited()
}

// logTail returns the last lines of the process's log, for error messages.
func (p *process) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// waitUntil polls check until it succeeds, the process exits, or ctx ends.
func (p *process) waitUntil(ctx context.Context, what string, check func(context.Context) error) error {
	var last error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		cancel()
		if last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it was %s: %v\n--- %s ---\n%s", p.name, what, last, p.logPath, p.logTail())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not %s: %v (%w)\n--- %s ---\n%s", p.name, what, last, ctx.Err(), p.logPath, p.logTail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pidAlive reports whether a process with this pid exists and is not a zombie.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// readPIDFile returns the pid recorded in path, or 0.
func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// adopt makes p refer to the live process recorded in its PID file, if any.
func (p *process) adopt() bool {
	pid := readPIDFile(p.pidPath)
	if !pidAlive(pid) {
		return false
	}
	p.mu.Lock()
	p.pid = pid
	p.done = nil
	p.mu.Unlock()
	return true
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and that this process has
// not handed out before. Another process may still take it first: starters retry with a new port.
func FreePort() (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for i := 0; i < 100; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port, nil
		}
	}
	return 0, fmt.Errorf("find free port: no new port after 100 tries")
}

// retryPorts calls start up to 3 times while it fails and the port was chosen automatically
// (picked is true): a port picked free can be taken by another process before the server binds it.
func retryPorts(picked bool, start func() error) error {
	var err error
	for i := 0; i < 3; i++ {
		if err = start(); err == nil || !picked {
			return err
		}
	}
	return err
}

// portFree reports whether nothing listens on 127.0.0.1:port.
func portFree(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// StopPIDFile stops the process recorded in a PID file: sig first, SIGKILL after timeout. It
// returns the pid it stopped, or 0 when the file names no live process. The file is removed.
func StopPIDFile(path string, sig syscall.Signal, timeout time.Duration) (int, error) {
	p := &process{name: filepath.Base(path), pidPath: path, stopSig: sig}
	if !p.adopt() {
		_ = os.Remove(path)
		return 0, nil
	}
	pid := p.PID()
	return pid, p.stop(timeout)
}

// RunningPID returns the pid recorded in a PID file when that process is alive, else 0.
func RunningPID(path string) int {
	pid := readPIDFile(path)
	if pidAlive(pid) {
		return pid
	}
	return 0
}

// startServer starts the server p runs on port and waits until health passes (what names the
// state in an error); a detached server already running and healthy is adopted instead.
func (p *process) startServer(ctx context.Context, port int, what string, health func(context.Context) error) error {
	if p.mode == Detached && p.adopt() {
		if err := health(ctx); err == nil {
			return nil
		}
	}
	if !portFree(port) {
		return fmt.Errorf("%s: port %d is already in use by another program", p.name, port)
	}
	if err := p.start(); err != nil {
		return err
	}
	return p.waitUntil(ctx, what, health)
}
