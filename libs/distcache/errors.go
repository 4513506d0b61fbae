package distcache

import "errors"

// Sentinel errors. Errors returned by this package wrap them; test with
// errors.Is.
var (
	// ErrNotFound: the key is absent from the projection's live generation
	// (or deleted there).
	ErrNotFound = errors.New("distcache: not found")
	// ErrUnavailable: Redis could not be reached in time to answer a miss.
	// The wrapped chain also holds the underlying network or context error.
	ErrUnavailable = errors.New("distcache: redis unavailable")
	// ErrRedisDataLost: Redis lost the projection's data and has not given
	// it all back yet, so an absence read from it is not an answer: a miss
	// that finds a key absent meanwhile fails with this error (wrapped
	// together with ErrUnavailable) instead of ErrNotFound. See
	// ProjectionStats.InLoss.
	ErrRedisDataLost = errors.New("distcache: redis lost its data")
	// ErrNoGeneration: the projection has no live generation (its pointer is
	// not set).
	ErrNoGeneration = errors.New("distcache: projection has no live generation")
	// ErrValueTooLarge: a value is over the configured maximum size.
	ErrValueTooLarge = errors.New("distcache: value too large")
	// ErrInvalidProjection: a projection name that ValidateProjection rejects.
	ErrInvalidProjection = errors.New("distcache: invalid projection name")
	// ErrInvalidGeneration: a generation number that is not positive.
	ErrInvalidGeneration = errors.New("distcache: invalid generation")
	// ErrInvalidKey: an empty key, or one longer than MaxKeyLen.
	ErrInvalidKey = errors.New("distcache: invalid key")
	// ErrInvalidVersion: a version that is not positive.
	ErrInvalidVersion = errors.New("distcache: invalid version")
	// ErrGenerationLive: RetireGeneration was asked to retire the generation
	// the pointer names.
	ErrGenerationLive = errors.New("distcache: generation is live")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("distcache: client closed")
	// ErrInvalidOption: an option with a value New or NewPublisher refuses.
	ErrInvalidOption = errors.New("distcache: invalid option")
	// ErrClusterUnsupported: Publisher.WriteTx was called on a Publisher
	// over Redis Cluster, where one transaction cannot span a generation's
	// keys.
	ErrClusterUnsupported = errors.New("distcache: not supported on Redis Cluster")
	// ErrFenced: Publisher.ApplyAs found the generation's change stream
	// claimed by another writer (ClaimStream); the batch's stream entries
	// were not appended.
	ErrFenced = errors.New("distcache: another writer claimed the change stream")
)

// MaxKeyLen is the longest key distcache accepts, in bytes.
const MaxKeyLen = 4096
