// Command distcache is the operator's command line for the control-plane's REST API.
//
//	distcache status [-url URL] [-token-file FILE] [-max-lag N] [-max-age D] [-color auto|always|never] [-if-up]
//
// status prints every projection's generations that are built or kept up to date (allocated,
// backfilling, tailing, live) in one table: state, build phase and progress, the live consumer's
// lag, the age of the newest change it applied, the cache-producer replica that owns it and its
// dead letters in the last hour, from GetStatus (GET /v1/projections/{name}/status). A row that
// needs a look is yellow (lag over -max-lag, dead letters, a rebuild in place), one that is not
// being kept fresh is red (no replica reporting, records waiting behind a newest change older
// than -max-age, Redis lost its data); its NOTE column says why, so the table reads the same
// without colours. Colours are on when stdout is a terminal and NO_COLOR is not set (-color
// forces them on or off).
//
// The API's address comes from -url, else DISTCACHE_URL, else the local stack's
// http://127.0.0.1:58091. The bearer token comes from DISTCACHE_TOKEN, else the file named by
// -token-file or DISTCACHE_TOKEN_FILE (its first line); it is sent, never printed. -ca-file
// trusts a private CA for an https URL.
//
// Exit status: 0 when every row is fine, 2 when a row is yellow or red, 1 on an error (the API
// does not answer, refuses the token, ...). With -if-up, an API that does not answer is said in
// one line and exits 0 (`make status` uses it: the services may not be running).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errUnhealthy is returned by run when a row needs attention: main exits 2.
var errUnhealthy = errors.New("some generations are not fresh")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, errUnhealthy):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "distcache:", err)
		os.Exit(1)
	}
}

const usage = `usage: distcache status [flags]   every projection's generations: lag, newest change, owner, dead letters
run "distcache status -h" for its flags`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "status":
		return runStatus(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}
