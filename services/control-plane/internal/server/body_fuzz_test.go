package server_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/server"
)

// restBodies are the REST request bodies the gateway decodes (proto/distcache/v1/
// controlplane_http.yaml): the definition of CreateProjection and UpdateProjection (body:
// projection), and the whole request of ReplayProjection, Cutover and Rollback (body: "*"). Each
// decodes the way the generated gateway does: into the field, or into the request.
var restBodies = []struct {
	name string
	// decode decodes a body as the generated gateway does and returns the part of the
	// request the body holds (nil when the body held nothing, as JSON null does).
	decode func(dec func(any) error) (proto.Message, error)
}{
	{"CreateProjection", func(dec func(any) error) (proto.Message, error) {
		var req pb.CreateProjectionRequest
		err := dec(&req.Projection)
		return orNil(req.Projection), err
	}},
	{"UpdateProjection", func(dec func(any) error) (proto.Message, error) {
		var req pb.UpdateProjectionRequest
		err := dec(&req.Projection)
		return orNil(req.Projection), err
	}},
	{"ReplayProjection", func(dec func(any) error) (proto.Message, error) {
		var req pb.ReplayProjectionRequest
		err := dec(&req)
		return &req, err
	}},
	{"Cutover", func(dec func(any) error) (proto.Message, error) {
		var req pb.CutoverRequest
		err := dec(&req)
		return &req, err
	}},
	{"Rollback", func(dec func(any) error) (proto.Message, error) {
		var req pb.RollbackRequest
		err := dec(&req)
		return &req, err
	}},
}

func orNil(d *pb.ProjectionDefinition) proto.Message {
	if d == nil {
		return nil
	}
	return d
}

// FuzzRESTBodies decodes arbitrary bytes as each REST request body through the gateway's
// marshaler (server.Marshaler: protojson, unknown fields refused, the field at fault named).
// Whatever the bytes: no panic, and a refusal is an error with a message. A body that decodes
// re-encodes (the marshaler's Marshal must not fail on what its decoder accepted) to JSON that
// decodes again to an equal message.
func FuzzRESTBodies(f *testing.F) {
	for _, s := range []struct {
		kind uint8
		body string
	}{
		{0, `{"name":"users_by_email","model":"users","key_template":"{email}","lowercase_key":true,"fields":["id","email"]}`},
		{0, `{"name":"p","model":"users","key_template":"{org_id}:{email}","fields":["id"],"filter":{"field":"status","op":"in","values":["a","b"]}}`},
		{1, `{"name":"p","model":"orgs","keyTemplate":"{slug}","fields":["slug"],"filter":null}`},
		{2, `{"name":"users_by_email"}`},
		{3, `{"name":"users_by_email","generation":"3"}`},
		{3, `{"generation":4}`},
		{4, `{}`},
		{0, `{"fields":[null]}`},
		{1, `{"name":"\u00e9\ud800"}`},
		{3, `{"generation":1e400}`},
		{0, `[]`},
		{2, `{"name":"a","name":"b"}`},
	} {
		f.Add(s.kind, []byte(s.body))
	}
	m := server.Marshaler()
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		b := restBodies[int(kind)%len(restBodies)]
		msg, err := b.decode(m.NewDecoder(bytes.NewReader(body)).Decode)
		if err != nil {
			if errors.Is(err, io.EOF) { // an empty body: the gateway takes the zero message
				return
			}
			if err.Error() == "" {
				t.Fatalf("%s: body %q refused without a message", b.name, body)
			}
			return
		}
		if msg == nil {
			return
		}
		out, err := m.Marshal(msg)
		if err != nil {
			t.Fatalf("%s: body %q decodes to %v, which does not re-encode: %v", b.name, body, msg, err)
		}
		again, err := b.decode(m.NewDecoder(bytes.NewReader(out)).Decode)
		if err != nil {
			t.Fatalf("%s: re-encoded %s (from %q) does not decode: %v", b.name, out, body, err)
		}
		if !proto.Equal(msg, again) {
			t.Fatalf("%s: body %q decodes to %v; re-encoded as %s it decodes to %v", b.name, body, msg, out, again)
		}
	})
}
