package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.temporal.io/sdk/temporal"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

// Registry is what the activities read from the projection registry (workflows/registry.Store)
// to check their parameters.
type Registry interface {
	GetGeneration(ctx context.Context, projection string, generation int64) (registry.Generation, error)
}

var _ Registry = (*registry.Store)(nil)

// verify checks an activity's parameters against the registry, trusting none it can check: the
// generation must exist and be in state, its topic must be the one of the registry's model under
// the producer's topic prefix, and def (nil: not checked) must be the definition the registry
// recorded for it. Refusals are non-retryable application errors naming what does not match:
// ErrTypeNotFound (no such generation), ErrTypePrecondition (another state) or
// ErrTypeInvalidDefinition (topic or definition); a registry that cannot be read is a retryable
// error.
func (a *Activities) verify(ctx context.Context, what, proj string, gen int64, topic, state string, def *projection.Definition) error {
	if a.Registry == nil {
		err := fmt.Errorf("%s %s/g%d: the worker has no registry to check its parameters against", what, proj, gen)
		return temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypePrecondition, err)
	}
	g, err := a.Registry.GetGeneration(ctx, proj, gen)
	if errors.Is(err, registry.ErrNotFound) {
		err := fmt.Errorf("%s %s/g%d: the registry lists no such generation", what, proj, gen)
		return temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeNotFound, err)
	}
	if err != nil {
		return fmt.Errorf("%s %s/g%d: read the registry: %w", what, proj, gen, err)
	}
	if g.State != state {
		err := fmt.Errorf("%s %s/g%d: the registry has the generation in state %s, not %s", what, proj, gen, g.State, state)
		return temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypePrecondition, err)
	}
	prefix := a.TopicPrefix
	if prefix == "" {
		prefix = events.DefaultTopicPrefix
	}
	if want := events.Topic(prefix, g.Definition.Model); topic != want {
		err := fmt.Errorf("%s %s/g%d: topic %q is not the registry's %q (model %q, topic prefix %q)", what, proj, gen, topic, want, g.Definition.Model, prefix)
		return temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
	}
	if def != nil {
		if diff := definitionDiff(*def, g.Definition); len(diff) > 0 {
			err := fmt.Errorf("%s %s/g%d: the definition is not the registry's: %s", what, proj, gen, strings.Join(diff, "; "))
			return temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
		}
	}
	return nil
}

// definitionDiff names each part of got that differs from the registry's want.
func definitionDiff(got, want projection.Definition) []string {
	var out []string
	field := func(name string, g, w any) { out = append(out, fmt.Sprintf("%s %v, the registry's %v", name, g, w)) }
	if got.Name != want.Name {
		field("name", fmt.Sprintf("%q", got.Name), fmt.Sprintf("%q", want.Name))
	}
	if got.Model != want.Model {
		field("model", fmt.Sprintf("%q", got.Model), fmt.Sprintf("%q", want.Model))
	}
	if got.KeyTemplate != want.KeyTemplate {
		field("key_template", fmt.Sprintf("%q", got.KeyTemplate), fmt.Sprintf("%q", want.KeyTemplate))
	}
	if got.LowercaseKey != want.LowercaseKey {
		field("lowercase_key", got.LowercaseKey, want.LowercaseKey)
	}
	if !slices.Equal(got.Fields, want.Fields) {
		field("fields", fmt.Sprintf("%q", got.Fields), fmt.Sprintf("%q", want.Fields))
	}
	gf, wf := projection.Definition{Filter: got.Filter}, projection.Definition{Filter: want.Filter}
	if !gf.Equal(wf) {
		field("filter", filterText(got.Filter), filterText(want.Filter))
	}
	return out
}

func filterText(f *projection.Filter) string {
	if f == nil {
		return "none"
	}
	return fmt.Sprintf("%s %s %q", f.Field, f.Op, f.Values)
}
