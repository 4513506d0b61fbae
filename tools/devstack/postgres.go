package devstack

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultPostgresPassword is the local stack's password for the postgres role. The stack listens
// on loopback only; production connections take their credentials from config.
const DefaultPostgresPassword = "distcache"

// PostgresConfig says where and how to run one PostgreSQL cluster.
type PostgresConfig struct {
	Name     string // process name; default "postgres"
	Dir      string // base directory: the cluster lives in Dir/data; created if missing
	Port     int    // 0 picks a free port
	Password string // password of the postgres role; default DefaultPostgresPassword
	Mode     Mode
}

// Postgres is one running PostgreSQL cluster, run as the postgres user when started by root.
type Postgres struct {
	cfg  PostgresConfig
	proc *process
	data string
	// Addr is "127.0.0.1:port".
	Addr string
}

// StartPostgres initialises the cluster on first use and starts it, waiting until it accepts
// connections.
func StartPostgres(ctx context.Context, cfg PostgresConfig) (*Postgres, error) {
	if cfg.Port == 0 {
		var out *Postgres
		err := retryPorts(true, func() error {
			c := cfg
			p, err := FreePort()
			if err != nil {
				return err
			}
			c.Port = p
			out, err = StartPostgres(ctx, c)
			return err
		})
		return out, err
	}
	if cfg.Name == "" {
		cfg.Name = "postgres"
	}
	if cfg.Password == "" {
		cfg.Password = DefaultPostgresPassword
	}
	uid, gid, err := postgresUser()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("postgres dir: %w", err)
	}
	// The postgres user must be able to reach and own its directory.
	if err := os.Chmod(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("postgres dir: %w", err)
	}
	if err := allowTraverse(cfg.Dir); err != nil {
		return nil, err
	}
	if uid >= 0 {
		if err := os.Chown(cfg.Dir, uid, gid); err != nil {
			return nil, fmt.Errorf("postgres dir: %w", err)
		}
	}
	pg := &Postgres{cfg: cfg, data: filepath.Join(cfg.Dir, "data"), Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.Port))}
	if _, err := os.Stat(filepath.Join(pg.data, "PG_VERSION")); err != nil {
		if err := pg.initdb(ctx, uid, gid); err != nil {
			return nil, err
		}
	}
	bin, err := findProgram("postgres")
	if err != nil {
		return nil, err
	}
	pg.proc = newProcess(cfg.Name, cfg.Dir, cfg.Mode, bin,
		"-D", pg.data,
		"-p", strconv.Itoa(cfg.Port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories="+cfg.Dir,
		"-c", "max_connections=400",
		// fsync=off keeps tests fast; committed data still reaches the OS before COMMIT returns,
		// so killing the server (not the machine) loses nothing.
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "shared_buffers=128MB",
		"-c", "log_min_messages=warning",
	)
	pg.proc.uid, pg.proc.gid = uid, gid
	pg.proc.stopSig = syscall.SIGINT // fast shutdown: do not wait for clients to disconnect
	if err := pg.Start(ctx); err != nil {
		return nil, err
	}
	return pg, nil
}

// allowTraverse gives others execute (search) permission on each of dir's ancestors that lacks
// it, so the postgres user can reach a directory made by root (test temp dirs and /root are 0700).
func allowTraverse(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); d != "/" && d != "."; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o001 != 0 {
			continue
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
			return fmt.Errorf("make %s reachable for postgres: %w", d, err)
		}
	}
	return nil
}

func (pg *Postgres) initdb(ctx context.Context, uid, gid int) error {
	bin, err := findProgram("initdb")
	if err != nil {
		return err
	}
	pwfile := filepath.Join(pg.cfg.Dir, "pwfile")
	if err := os.WriteFile(pwfile, []byte(pg.cfg.Password+"\n"), 0o600); err != nil {
		return fmt.Errorf("initdb pwfile: %w", err)
	}
	defer os.Remove(pwfile)
	if uid >= 0 {
		if err := os.Chown(pwfile, uid, gid); err != nil {
			return fmt.Errorf("initdb pwfile: %w", err)
		}
	}
	p := newProcess(pg.cfg.Name+"-initdb", pg.cfg.Dir, Attached, bin,
		"-D", pg.data, "-U", "postgres", "-E", "UTF8", "--no-sync",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile="+pwfile)
	p.uid, p.gid = uid, gid
	if err := p.start(); err != nil {
		return err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = p.kill()
		return fmt.Errorf("initdb: %w", ctx.Err())
	}
	if _, err := os.Stat(filepath.Join(pg.data, "PG_VERSION")); err != nil {
		return fmt.Errorf("initdb failed:\n%s", p.logTail())
	}
	_ = os.Remove(p.pidPath)
	return nil
}

// Start starts the server (again) and waits until it accepts connections. In Detached mode it
// adopts a healthy server already running from the same directory.
func (pg *Postgres) Start(ctx context.Context) error {
	if pg.cfg.Mode == Detached && pg.proc.adopt() {
		if err := pg.Health(ctx); err == nil {
			return nil
		}
	}
	if !portFree(pg.cfg.Port) {
		return fmt.Errorf("%s: port %d is already in use by another program", pg.cfg.Name, pg.cfg.Port)
	}
	// A killed server leaves its pid file behind; the postmaster is gone, so the file is stale,
	// but its backends may not be yet (below).
	if err := pg.waitOldServerGone(ctx, oldServerTimeout); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(pg.data, "postmaster.pid"))
	if err := pg.proc.start(); err != nil {
		return err
	}
	return pg.proc.waitUntil(ctx, "accepting connections", pg.Health)
}

// URL returns a connection URL for database db.
func (pg *Postgres) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", pg.cfg.Password),
		Host:     pg.Addr,
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Health connects and runs a trivial query.
func (pg *Postgres) Health(ctx context.Context) error { return ProbePostgres(ctx, pg.URL("postgres")) }

// ProbePostgres connects to url and runs a trivial query.
func ProbePostgres(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// CreateDatabase creates an empty database.
func (pg *Postgres) CreateDatabase(ctx context.Context, name string) error {
	return pg.exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
}

// DropDatabase drops a database, disconnecting its sessions.
func (pg *Postgres) DropDatabase(ctx context.Context, name string) error {
	return pg.exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

func (pg *Postgres) exec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, pg.URL("postgres"))
	if err != nil {
		return fmt.Errorf("postgres connect: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("postgres %q: %w", sql, err)
	}
	return nil
}

// Port returns the server's TCP port.
func (pg *Postgres) Port() int { return pg.cfg.Port }

// PID returns the postmaster's process id.
func (pg *Postgres) PID() int { return pg.proc.PID() }

// Stop shuts the server down with a fast shutdown (SIGINT), then SIGKILL after 30 s.
func (pg *Postgres) Stop() error { return pg.proc.stop(30 * time.Second) }

// Kill kills the postmaster with SIGKILL, as a crash would.
func (pg *Postgres) Kill() error { return pg.proc.kill() }

// Restart kills the server if it runs and starts it again on the same port. Start waits until
// the killed server's backends are gone (see waitOldServerGone).
func (pg *Postgres) Restart(ctx context.Context) error {
	if err := pg.Kill(); err != nil {
		return err
	}
	// Backends of the killed postmaster exit on their own once they notice; wait for the port.
	deadline := time.Now().Add(20 * time.Second)
	for !portFree(pg.cfg.Port) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return pg.Start(ctx)
}

// oldServerTimeout bounds the wait for a killed server's backends in Start.
const oldServerTimeout = 30 * time.Second

// waitOldServerGone waits, up to timeout, until no process of a previous server of this data
// directory holds its System V shared memory segment. Killing the postmaster does not kill its
// backends and auxiliary processes: each runs in a session of its own (PostgreSQL's
// InitPostmasterChild calls setsid), so the process-group kill misses them, and they exit only
// once they notice the postmaster's death, which takes a while on a loaded machine. A new
// postmaster that finds the segment still attached refuses to start ("pre-existing shared
// memory block ... is still in use"). The segment's id is on the seventh line of the old
// postmaster.pid ("key id"); the kernel's attach count is in /proc/sysvipc/shm. No pid file,
// no segment recorded in it, or no such segment any more: nothing to wait for.
func (pg *Postgres) waitOldServerGone(ctx context.Context, timeout time.Duration) error {
	shmid, ok := postmasterShmID(filepath.Join(pg.data, "postmaster.pid"))
	if !ok {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		seg, err := sysvShm(shmid)
		if err != nil {
			return fmt.Errorf("%s: %w", pg.cfg.Name, err)
		}
		if seg.nattch == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the previous server's shared memory (id %d) is still attached by %d processes after %s (last attach or detach by pid %d)",
				pg.cfg.Name, shmid, seg.nattch, timeout, seg.lpid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: wait for the previous server's processes: %w", pg.cfg.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// postmasterShmID returns the System V shared memory id that a postmaster.pid records (line 7:
// "key id", PostgreSQL 10 and later), and whether there is one.
func postmasterShmID(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 7 {
		return 0, false
	}
	f := strings.Fields(lines[6])
	if len(f) != 2 {
		return 0, false
	}
	id, err := strconv.Atoi(f[1])
	if err != nil || id < 0 {
		return 0, false
	}
	return id, true
}

// shmSegment is what /proc/sysvipc/shm says of one segment.
type shmSegment struct {
	nattch int // processes attached; 0 for a segment that no longer exists
	lpid   int // the last process to attach or detach
}

// sysvShm reads segment shmid's line of /proc/sysvipc/shm ("key shmid perms size cpid lpid
// nattch ..."); a segment that is not listed was removed and has no process attached.
func sysvShm(shmid int) (shmSegment, error) {
	b, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		return shmSegment{}, fmt.Errorf("read shared memory segments: %w", err)
	}
	want := strconv.Itoa(shmid)
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 7 || f[1] != want {
			continue
		}
		nattch, err := strconv.Atoi(f[6])
		if err != nil {
			return shmSegment{}, fmt.Errorf("parse /proc/sysvipc/shm line %q: %w", line, err)
		}
		lpid, _ := strconv.Atoi(f[5])
		return shmSegment{nattch: nattch, lpid: lpid}, nil
	}
	return shmSegment{}, nil
}

// LogPath returns the path of the server's log file.
func (pg *Postgres) LogPath() string { return pg.proc.logPath }
