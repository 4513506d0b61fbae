package projection_test

import (
	"fmt"

	"github.com/distcache/distcache/libs/projection"
)

// A projection of users keyed by lowercased e-mail, keeping two fields of active users.
func ExampleCompile() {
	p, err := projection.Compile(projection.Definition{
		Name:         "users_by_email",
		Model:        "users",
		KeyTemplate:  "{email}",
		LowercaseKey: true,
		Fields:       []string{"id", "email"},
		Filter:       &projection.Filter{Field: "status", Op: projection.OpEq, Values: []string{"active"}},
	})
	if err != nil {
		panic(err)
	}
	key, value, keep, err := p.Apply([]byte(`{"id":42,"email":"Ada@Example.com","status":"active","password":"x"}`))
	fmt.Println(key, string(value), keep, err)
	key, _, keep, _ = p.Apply([]byte(`{"id":43,"email":"bob@example.com","status":"banned"}`))
	fmt.Println(key, keep)
	// Output:
	// ada@example.com {"id":42,"email":"Ada@Example.com"} true <nil>
	// bob@example.com false
}

// Validation names every bad field.
func ExampleDefinition_Validate() {
	err := projection.Definition{Name: "Bad:Name", Model: "users", KeyTemplate: "{org_id}{slug}", Fields: []string{"id"}}.Validate()
	fmt.Println(err)
	// Output:
	// invalid projection definition: name: must match ^[a-z][a-z0-9_-]*$; key_template: placeholder {slug} at offset 8 follows another placeholder with no separator
}
