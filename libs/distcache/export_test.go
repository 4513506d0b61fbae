package distcache

// PackedForTest is a packed change-stream entry value holding one change,
// appended to b (nil: a new entry).
func PackedForTest(b []byte, key, value string) []byte {
	if b == nil {
		b = []byte{packedV1}
	}
	return appendPacked(b, key, value)
}
