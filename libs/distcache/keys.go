package distcache

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The Redis layout. This comment is the contract every part of distcache
// shares; libs/distcache is the only code that builds these keys.
//
// For a projection P (see ValidateProjection for the allowed names) and a
// generation N (a positive integer):
//
//	dc:P:gN:<key>        value of <key> in generation N          ValueKey
//	dc:{P}:gN:changes    change stream of generation N           StreamKey
//	dc:{P}:gN:writer     claim of the stream's writer (Cluster)  StreamWriterKey
//	dc:{P}:current       pointer: the live generation, decimal   PointerKey
//	dc:{P}:control       control stream: cutover events          ControlKey
//
// Hash tags. Value keys carry no hash tag, so the values of one projection
// spread over every slot of a Redis Cluster and a projection can outgrow one
// shard. The pointer, the control stream and the change streams of a
// projection carry the tag {P}: they live in one slot, so a client waits on the
// control stream and the live change stream with one XREAD, and a cutover sets
// the pointer and appends its control event in one atomic script. (DESIGN.md
// writes the pointer as dc:P:current; the tag is the one divergence, made on
// purpose for these two reasons.) A user key that itself contains "{...}"
// gives its value key a tag of its own; that only changes which slot the value
// lands in.
//
// Value encoding. A value key holds a string: 16 lower-case hex digits of the
// version (big-endian), one op byte, then the payload:
//
//	"000000000000002a" "s" <payload>     a value, version 42
//	"000000000000002b" "d"               a tombstone, version 43 (with a TTL)
//
// A write whose version is not greater than the stored one is not applied, so
// replays and redeliveries are harmless. A delete keeps a tombstone with its
// version for a configurable time (WithTombstoneTTL) so that an older write
// arriving later cannot resurrect the key.
//
// A change stream entry holds the writes of one publish call (or of one chunk
// of up to 128 changes of a batch): one field per written key, named by the
// user key, whose value is exactly what was stored in the value key (version,
// op byte, payload; a tombstone is its version followed by "d"). Only writes
// that were applied (or, on Cluster, replayed) appear. Streams are capped
// with approximate trimming (MAXLEN ~ n entries, see WithStreamMaxLen); a
// client that finds its last position trimmed away has a gap and
// revalidates that projection.
//
// Control stream entries have the fields t ("cutover"), gen (the new
// generation) and prev (the generation the pointer named before, "0" for
// none). The control stream is capped at about 1000 entries.
//
// Write order. On a standalone or replicated Redis the value and its stream
// entry are written by one Lua script, atomically. On Redis Cluster they are
// in different slots: the value is written first (version-guarded), then the
// stream entry; a write that finds the same version already stored appends the
// stream entry again, so a replay after a crash between the two steps repairs
// the stream, and clients ignore the duplicate by version. A writer paused
// between the two steps (a zombie) could so append older versions after a newer
// writer's: a writer that claims the generation (Publisher.ClaimStream, then
// Publisher.ApplyAs) has its entries appended by a script that first checks
// that the stream writer key, in the stream's slot, still holds its claim.
//
// Retiring a generation SCANs GenerationPattern on every master and UNLINKs the
// keys in batches, then unlinks the generation's change stream.

const keyPrefix = "dc:"

// MaxProjectionNameLen is the longest projection name ValidateProjection accepts.
const MaxProjectionNameLen = 128

// ValidateProjection reports whether name can name a projection: 1 to
// MaxProjectionNameLen characters from [A-Za-z0-9_.-]. The restriction keeps
// the Redis keys unambiguous (no ':' or hash-tag braces) and SCAN patterns
// free of glob characters. The error wraps ErrInvalidProjection.
func ValidateProjection(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalidProjection)
	}
	if len(name) > MaxProjectionNameLen {
		return fmt.Errorf("%w: %q is longer than %d bytes", ErrInvalidProjection, name, MaxProjectionNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return fmt.Errorf("%w: %q has %q at byte %d (allowed: A-Z a-z 0-9 _ . -)", ErrInvalidProjection, name, c, i)
		}
	}
	return nil
}

func validateGeneration(gen int64) error {
	if gen <= 0 {
		return fmt.Errorf("%w: %d (must be > 0)", ErrInvalidGeneration, gen)
	}
	return nil
}

// ValueKey is the Redis key of key's value in generation gen of projection
// proj: dc:<proj>:g<gen>:<key>.
func ValueKey(proj string, gen int64, key string) string {
	var b strings.Builder // one allocation
	b.Grow(len(keyPrefix) + len(proj) + len(key) + 24)
	var num [20]byte
	b.WriteString(keyPrefix)
	b.WriteString(proj)
	b.WriteString(":g")
	b.Write(strconv.AppendInt(num[:0], gen, 10))
	b.WriteByte(':')
	b.WriteString(key)
	return b.String()
}

// appendGenPrefix appends "dc:<proj>:g<gen>:".
func appendGenPrefix(b []byte, proj string, gen int64) []byte {
	b = append(b, keyPrefix...)
	b = append(b, proj...)
	b = append(b, ":g"...)
	b = strconv.AppendInt(b, gen, 10)
	return append(b, ':')
}

// StreamKey is the change stream of generation gen of projection proj:
// dc:{<proj>}:g<gen>:changes (hash-tagged, see the package's layout contract).
func StreamKey(proj string, gen int64) string {
	return keyPrefix + "{" + proj + "}:g" + strconv.FormatInt(gen, 10) + ":changes"
}

// StreamWriterKey holds the claim of the writer that appends generation gen's
// change stream on Redis Cluster (ClaimStream, ApplyAs):
// dc:{<proj>}:g<gen>:writer, in the stream's slot.
func StreamWriterKey(proj string, gen int64) string {
	return keyPrefix + "{" + proj + "}:g" + strconv.FormatInt(gen, 10) + ":writer"
}

// PointerKey holds the live generation of projection proj as a decimal
// string: dc:{<proj>}:current.
func PointerKey(proj string) string {
	return keyPrefix + "{" + proj + "}:current"
}

// ControlKey is the control stream of projection proj, where cutovers are
// announced: dc:{<proj>}:control.
func ControlKey(proj string) string {
	return keyPrefix + "{" + proj + "}:control"
}

// GenerationPattern is the SCAN MATCH pattern of every value key of
// generation gen of projection proj: dc:<proj>:g<gen>:*. It does not match
// the generation's change stream (see StreamKey). proj must be valid (see
// ValidateProjection), so it holds no glob characters.
func GenerationPattern(proj string, gen int64) string {
	return string(appendGenPrefix(nil, proj, gen)) + "*"
}

// Value encoding (see the layout contract above).
const (
	versionHexLen  = 16
	valueHeaderLen = versionHexLen + 1
	opSet          = 's'
	opDelete       = 'd'
)

var errBadEncoding = errors.New("malformed value")

// AppendVersionHex appends version as ParseVersionHex reads it: 16
// lower-case hex digits, big-endian. It is the one writer of that form.
func AppendVersionHex(b []byte, version int64) []byte {
	var raw [8]byte
	binary.BigEndian.PutUint64(raw[:], uint64(version))
	return hex.AppendEncode(b, raw[:])
}

func versionHex(version int64) string {
	return string(AppendVersionHex(make([]byte, 0, versionHexLen), version))
}

// ParseVersionHex parses the version at the start of s: 16 lower-case hex
// digits, big-endian, as a value key's value and its change-stream entries
// begin (see the layout contract above). It fails when s is shorter, holds
// another character there, or the version does not fit an int64.
func ParseVersionHex(s string) (int64, error) { return parseVersionHex(s) }

func parseVersionHex[T ~string | ~[]byte](s T) (int64, error) {
	if len(s) < versionHexLen {
		return 0, errBadEncoding
	}
	var v uint64
	for i := 0; i < versionHexLen; i++ {
		c := s[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, errBadEncoding
		}
		v = v<<4 | uint64(d)
	}
	if int64(v) < 0 {
		return 0, errBadEncoding
	}
	return int64(v), nil
}

// decodeValue splits a stored Redis value into version, op and payload. The
// payload aliases s.
func decodeValue[T ~string | ~[]byte](s T) (version int64, op byte, payload T, err error) {
	if len(s) < valueHeaderLen {
		return 0, 0, payload, errBadEncoding
	}
	version, err = parseVersionHex(s)
	if err != nil {
		return 0, 0, payload, err
	}
	op = s[versionHexLen]
	if op != opSet && op != opDelete {
		return 0, 0, payload, errBadEncoding
	}
	return version, op, s[valueHeaderLen:], nil
}
