// Package pgconf reads PostgreSQL connection strings from environment
// variables and checks them with pgx (URL or key=value form, with the TLS
// files the string names), so that a service stops at start with the
// variable named, and never with the password in the message.
package pgconf

import (
	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/libs/svcconfig/envconf"
)

// URL returns the connection string in name ("" when unset), recording an
// error when pgx cannot parse it, or, with required, when it is unset; hint
// completes the "required" message.
func URL(r *envconf.Reader, name string, required bool, hint string) string {
	v := r.String(name, "")
	switch {
	case v == "" && required:
		r.Fail(name, "required (%s)", hint)
	case v != "":
		if _, err := pgx.ParseConfig(v); err != nil {
			// pgx's message may echo the string: never repeat the password.
			r.Fail(name, "not a valid PostgreSQL connection string (%s)", envconf.MaskIn(err.Error(), envconf.ConnPassword(v)))
		}
	}
	return v
}
