package devstack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// ProgramConfig describes any other program run beside the stack (the services, an example).
type ProgramConfig struct {
	Name  string   // used for the log file Dir/Name.log and the PID file Dir/Name.pid
	Dir   string   // working directory; created if missing
	Args  []string // program path and arguments
	Env   []string // extra environment, KEY=VALUE
	Mode  Mode
	Ready func(ctx context.Context) error // health check polled until it passes; nil: none
}

// Program is a running program started by StartProgram.
type Program struct {
	cfg  ProgramConfig
	proc *process
}

// StartProgram starts a program and waits until cfg.Ready passes (or the program exits, or ctx
// ends, with the tail of its log in the error).
func StartProgram(ctx context.Context, cfg ProgramConfig) (*Program, error) {
	if len(cfg.Args) == 0 {
		return nil, fmt.Errorf("program %s: no command", cfg.Name)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("program %s: %w", cfg.Name, err)
	}
	p := &Program{cfg: cfg, proc: newProcess(cfg.Name, cfg.Dir, cfg.Mode, cfg.Args...)}
	p.proc.env = cfg.Env
	if err := p.proc.start(); err != nil {
		return nil, err
	}
	if cfg.Ready != nil {
		if err := p.proc.waitUntil(ctx, "ready", cfg.Ready); err != nil {
			_ = p.proc.kill()
			return nil, err
		}
	}
	return p, nil
}

// PID returns the program's process id.
func (p *Program) PID() int { return p.proc.PID() }

// Exited reports whether the program has exited.
func (p *Program) Exited() bool { return p.proc.exited() }

// Stop sends SIGTERM and waits up to timeout before SIGKILL.
func (p *Program) Stop(timeout time.Duration) error { return p.proc.stop(timeout) }

// Kill sends SIGKILL.
func (p *Program) Kill() error { return p.proc.kill() }

// Signal sends sig.
func (p *Program) Signal(sig syscall.Signal) error { return p.proc.signal(sig) }

// LogPath returns the program's log file.
func (p *Program) LogPath() string { return p.proc.logPath }

// LogTail returns the last lines of the program's log.
func (p *Program) LogTail() string { return p.proc.logTail() }

// GoBuild builds pkg in module directory modDir into out, atomically (a temporary file renamed
// into place), so several builders may race for the same output. Set noWorkspace for a module
// kept outside go.work.
func GoBuild(ctx context.Context, modDir, pkg, out string, noWorkspace bool) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), filepath.Base(out)+".tmp-")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp.Name(), pkg)
	cmd.Dir = modDir
	if noWorkspace {
		cmd.Env = append(os.Environ(), "GOWORK=off")
	}
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return os.Rename(tmp.Name(), out)
}
