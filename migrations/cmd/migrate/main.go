// Command migrate applies distcache's embedded PostgreSQL migrations; it is
// what `make migrate` runs.
//
//	migrate [-database URL] up|down|version
//
// The database URL comes from -database or, when that is empty, from the
// DATABASE_URL environment variable (postgres://user:pass@host:port/db).
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
var errUsage = errors.New("usage: migrate [-database URL] up|down|version (or set DATABASE_URL)")

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
	if fs.NArg() != 1 {
		return errUsage
	}
	cmd := fs.Arg(0)
	if *dbURL == "" {
		*dbURL = getenv("DATABASE_URL")
	}
	if *dbURL == "" {
		return errors.New("DATABASE_URL: not set (and no -database flag)")
	}
	if _, err := migrations.DriverURL(*dbURL); err != nil {
		return fmt.Errorf("DATABASE_URL: %w", err)
	}
	log.Info("migrate", "command", cmd, "database", maskPassword(*dbURL))

	switch cmd {
	case "up":
		if err := migrations.Up(ctx, *dbURL); err != nil {
			return err
		}
	case "down":
		if err := migrations.Down(ctx, *dbURL); err != nil {
			return err
		}
	case "version":
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	v, dirty, err := migrations.Version(ctx, *dbURL)
	if err != nil {
		return err
	}
	log.Info("migrate done", "command", cmd, "version", v, "dirty", dirty, "latest", migrations.LatestVersion)
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
