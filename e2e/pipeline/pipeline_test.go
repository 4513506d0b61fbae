package pipeline

import "testing"

func TestSeq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{`{"id":1,"k":"item-1","seq":42,"pad":"x"}`, 42, true},
		{`{"seq": 7}`, 7, true},
		{`{"seq":"9"}`, 9, true},
		{`{"id":1}`, 0, false},
		{`{"seq":}`, 0, false},
	} {
		got, ok := Seq([]byte(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("Seq(%s) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestDecodeRedisValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want RedisItem
	}{
		{"000000000000002as" + `{"seq":3}`, RedisItem{Found: true, Version: 42, Seq: 3}},
		{"000000000000002bd", RedisItem{}}, // a tombstone
		{"short", RedisItem{}},
		{"zzzzzzzzzzzzzzzzs{}", RedisItem{}},
	} {
		if got := decodeRedisValue(tc.in); got != tc.want {
			t.Errorf("decodeRedisValue(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
