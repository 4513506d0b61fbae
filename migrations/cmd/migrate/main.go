// Command migrate applies one set of distcache's embedded PostgreSQL
// migrations; `make migrate` and the chart's migration Jobs run it.
//
//	migrate [-database URL] up|down|version|check core|control
//	migrate [-database URL] force core|control VERSION
//
// core is the outbox and capture trigger (a core service's database), control
// the projection registry (the control-plane's database); each set keeps its
// own version table (see package migrations). check exits non-zero, naming
// the missing migrations, unless the set is up to date; force records VERSION
// as applied and clears the dirty flag, after a failed migration was repaired
// by hand. The database URL comes from -database or, when that is empty, from
// the DATABASE_URL environment variable (postgres://user:pass@host:port/db).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/distcache/distcache/migrations"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "migrate:", err)
		os.Exit(1)
	}
}

// errUsage marks command-line mistakes.
var errUsage = errors.New("usage: migrate [-database URL] up|down|version|check core|control, or force core|control VERSION (or set DATABASE_URL)")

// run parses args, reads DATABASE_URL through getenv and runs one command,
// logging to logw.
func run(ctx context.Context, args []string, getenv func(string) string, logw io.Writer) error {
	log := slog.New(slog.NewTextHandler(logw, nil))
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(logw)
	dbURL := fs.String("database", "", "PostgreSQL URL (default $DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	cmd := fs.Arg(0)
	wantArgs := 2
	if cmd == "force" {
		wantArgs = 3
	}
	if fs.NArg() != wantArgs {
		return errUsage
	}
	switch cmd {
	case "up", "down", "version", "check", "force":
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	set, err := migrations.SetByName(fs.Arg(1))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var force uint64
	if cmd == "force" {
		if force, err = strconv.ParseUint(fs.Arg(2), 10, 32); err != nil || uint(force) > set.LatestVersion() {
			return fmt.Errorf("%w: force %s: version %q, want 0..%d", errUsage, set, fs.Arg(2), set.LatestVersion())
		}
	}
	if *dbURL == "" {
		*dbURL = getenv("DATABASE_URL")
	}
	if *dbURL == "" {
		return errors.New("DATABASE_URL: not set (and no -database flag)")
	}
	if _, err := migrations.DriverURL(*dbURL, set); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	log.Info("migrate", "command", cmd, "set", set.Name(), "database", maskPassword(*dbURL))

	switch cmd {
	case "up":
		err = migrations.Up(ctx, *dbURL, set)
	case "down":
		err = migrations.Down(ctx, *dbURL, set)
	case "force":
		err = migrations.Force(ctx, *dbURL, set, uint(force))
	case "check":
		err = migrations.Check(ctx, *dbURL, set)
	}
	if err != nil {
		return err
	}
	v, dirty, err := migrations.Version(ctx, *dbURL, set)
	if err != nil {
		return err
	}
	log.Info("migrate done", "command", cmd, "set", set.Name(), "version", v, "dirty", dirty, "latest", set.LatestVersion())
	return nil
}

// maskPassword hides the password of a URL for logging.
func maskPassword(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparsable URL>"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
