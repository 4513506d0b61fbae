module github.com/distcache/distcache/libs/projection

go 1.26.8

require github.com/distcache/distcache/libs/events v0.0.0

replace github.com/distcache/distcache/libs/events => ../events
