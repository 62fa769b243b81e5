package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"
)

// environmentDocument is the part of Flagsmith's environment document
// (GET /api/v1/environment-document/) that evaluation and the API need.
type environmentDocument struct {
	ID                json.RawMessage    `json:"id"` // the environment's id, which Flagsmith's webhooks name
	APIKey            *string            `json:"api_key"`
	Name              string             `json:"name"`
	UpdatedAt         string             `json:"updated_at"`
	Project           *documentProject   `json:"project"`
	FeatureStates     []documentFeature  `json:"feature_states"`
	IdentityOverrides []documentIdentity `json:"identity_overrides"`
	// HideSensitiveData empties the traits of identities answers.
	HideSensitiveData bool `json:"hide_sensitive_data"`
	// HideDisabledFlags is the environment's own setting; null defers to
	// the project's (see hidesDisabled).
	HideDisabledFlags *bool `json:"hide_disabled_flags"`
}

// hidesDisabled reports whether client keys are kept from disabled flags:
// the environment's setting when it has one, else the project's, as
// Flagsmith's Environment.get_hide_disabled_flags decides.
func (doc *environmentDocument) hidesDisabled() bool {
	if doc.HideDisabledFlags != nil {
		return *doc.HideDisabledFlags
	}
	return doc.Project.HideDisabledFlags != nil && *doc.Project.HideDisabledFlags
}

type documentProject struct {
	HideDisabledFlags       *bool             `json:"hide_disabled_flags"`
	ServerKeyOnlyFeatureIDs []json.Number     `json:"server_key_only_feature_ids"`
	Segments                []documentSegment `json:"segments"`
}

type documentFeature struct {
	Feature *struct {
		ID   json.Number `json:"id"`
		Name string      `json:"name"`
		Type *string     `json:"type"`
	} `json:"feature"`
	Enabled           bool            `json:"enabled"`
	DjangoID          *json.Number    `json:"django_id"`
	FeatureStateUUID  string          `json:"featurestate_uuid"`
	FeatureStateValue json.RawMessage `json:"feature_state_value"`
	FeatureSegment    *struct {
		Priority json.RawMessage `json:"priority"`
	} `json:"feature_segment"`
	MultivariateValues []struct {
		Option *struct {
			Value json.RawMessage `json:"value"`
			Key   *string         `json:"key"`
		} `json:"multivariate_feature_option"`
		PercentageAllocation json.Number  `json:"percentage_allocation"`
		ID                   *json.Number `json:"id"`
		UUID                 string       `json:"mv_fs_value_uuid"`
	} `json:"multivariate_feature_state_values"`
}

type documentSegment struct {
	ID            json.Number       `json:"id"`
	Name          string            `json:"name"`
	Rules         []documentRule    `json:"rules"`
	FeatureStates []documentFeature `json:"feature_states"`
}

type documentRule struct {
	Type       string `json:"type"`
	Conditions []struct {
		Operator string          `json:"operator"`
		Property *string         `json:"property_"`
		Value    json.RawMessage `json:"value"`
	} `json:"conditions"`
	Rules []documentRule `json:"rules"`
}

type documentIdentity struct {
	Identifier       string            `json:"identifier"`
	IdentityFeatures []documentFeature `json:"identity_features"`
}

// parseDocument reads an environment document. Errors name the field that
// is missing or malformed.
func parseDocument(raw []byte) (*environmentDocument, error) {
	var doc environmentDocument
	// Unmarshal rather than a Decoder: a Decoder first copies the whole
	// document into a buffer of its own, which for a large document is as
	// much memory again. Every number field is typed, so nothing needs
	// UseNumber.
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, documentSyntaxError(raw)
	}
	if doc.APIKey == nil || *doc.APIKey == "" {
		return nil, errors.New("environment document: api_key is missing")
	}
	if doc.Project == nil {
		return nil, errors.New("environment document: project is missing")
	}
	return &doc, nil
}

// documentSyntaxError says why a document does not parse, in the words of
// a streaming decoder ("unexpected EOF" for a truncated body, trailing data
// named as such), which read better in a poll log than Unmarshal's.
func documentSyntaxError(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var doc environmentDocument
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf("parse environment document: %w", err)
	}
	return errors.New("parse environment document: trailing data after the JSON object")
}

// evalContext maps the document to an evaluation context and its identity
// overrides to groups, as Flagsmith's engine maps a document: features keyed
// by name, segments by id, a repeated key keeping its first position and its
// last value.
func (doc *environmentDocument) evalContext() (*evalContext, []identityOverrideGroup, error) {
	// The API shows every flag's feature with the type of the environment's
	// own feature state of that id.
	types := make(map[string]string, len(doc.FeatureStates))
	for _, fs := range doc.FeatureStates {
		if fs.Feature != nil && fs.Feature.Type != nil && *fs.Feature.Type != "" {
			types[fs.Feature.ID.String()] = *fs.Feature.Type
		}
	}
	ctx := &evalContext{Environment: environmentContext{Key: *doc.APIKey, Name: doc.Name}}
	setFeature := memberSetter(&ctx.Features, len(doc.FeatureStates))
	for i, fs := range doc.FeatureStates {
		fc, err := mapFeatureState(fs, types)
		if err != nil {
			return nil, nil, fmt.Errorf("environment document: feature_states[%d]: %w", i, err)
		}
		setFeature(fc.Name, fc)
	}
	setSegment := memberSetter(&ctx.Segments, len(doc.Project.Segments))
	for i, s := range doc.Project.Segments {
		if s.ID == "" {
			return nil, nil, fmt.Errorf("environment document: project.segments[%d].id is missing", i)
		}
		sc := segmentContext{
			Key:      s.ID.String(),
			Name:     s.Name,
			Rules:    mapRules(s.Rules),
			Metadata: json.RawMessage(`{"id":` + s.ID.String() + `,"source":"api"}`),
		}
		for j, fs := range s.FeatureStates {
			fc, err := mapFeatureState(fs, types)
			if err != nil {
				return nil, nil, fmt.Errorf("environment document: project.segments[%d].feature_states[%d]: %w", i, j, err)
			}
			sc.Overrides = append(sc.Overrides, fc)
		}
		setSegment(sc.Key, sc)
	}
	groups, err := groupIdentityOverrides(doc.IdentityOverrides, types)
	if err != nil {
		return nil, nil, err
	}
	return ctx, groups, nil
}

// memberSetter returns a function that sets a key of o the way a Python
// dict does: a repeated key keeps its first position and takes the new value.
func memberSetter[T any](o *ordered[T], capacity int) func(key string, v T) {
	at := make(map[string]int, capacity)
	if *o == nil {
		*o = make(ordered[T], 0, capacity)
	}
	return func(key string, v T) {
		if i, ok := at[key]; ok {
			(*o)[i].Value = v
			return
		}
		at[key] = len(*o)
		*o = append(*o, member[T]{key, v})
	}
}

func mapFeatureState(fs documentFeature, types map[string]string) (featureContext, error) {
	if fs.Feature == nil {
		return featureContext{}, errors.New("feature is missing")
	}
	if fs.Feature.ID == "" {
		return featureContext{}, errors.New("feature.id is missing")
	}
	fc := featureContext{
		Name:     fs.Feature.Name,
		Enabled:  fs.Enabled,
		Value:    fs.FeatureStateValue,
		Metadata: json.RawMessage(`{"id":` + fs.Feature.ID.String() + `}`),
		apiID:    fs.Feature.ID.String(),
		apiType:  featureType(types, fs.Feature.ID.String()),
	}
	if fs.DjangoID != nil && fs.DjangoID.String() != "0" {
		fc.Key = fs.DjangoID.String()
	} else {
		fc.Key = fs.FeatureStateUUID
	}
	if fc.Key == "" {
		return featureContext{}, errors.New("django_id and featurestate_uuid are both missing")
	}
	for i, mv := range fs.MultivariateValues {
		if mv.Option == nil {
			return featureContext{}, fmt.Errorf("multivariate_feature_state_values[%d].multivariate_feature_option is missing", i)
		}
		v := variantContext{Key: mv.Option.Key, Value: mv.Option.Value, Weight: mv.PercentageAllocation}
		if v.Weight == "" {
			return featureContext{}, fmt.Errorf("multivariate_feature_state_values[%d].percentage_allocation is missing", i)
		}
		switch {
		case mv.ID != nil && mv.ID.String() != "0":
			v.Priority = json.RawMessage(mv.ID.String())
		default:
			n, ok := uuidInt(mv.UUID)
			if !ok {
				return featureContext{}, fmt.Errorf("multivariate_feature_state_values[%d]: no id and mv_fs_value_uuid %q is not a UUID", i, mv.UUID)
			}
			v.Priority = json.RawMessage(n.String())
		}
		fc.Variants = append(fc.Variants, v)
	}
	if fs.FeatureSegment != nil && len(fs.FeatureSegment.Priority) > 0 {
		fc.Priority = fs.FeatureSegment.Priority
	}
	return fc, nil
}

// featureType is the type the API shows for a feature id; STANDARD unless
// the environment's feature state says otherwise.
func featureType(types map[string]string, id string) string {
	if t := types[id]; t != "" {
		return t
	}
	return "STANDARD"
}

// uuidInt is Python's uuid.UUID(s).int: the 128-bit number a UUID spells.
func uuidInt(s string) (*big.Int, bool) {
	s = strings.TrimPrefix(strings.TrimPrefix(s, "urn:"), "uuid:")
	s = strings.TrimSuffix(strings.TrimPrefix(s, "{"), "}")
	s = strings.ReplaceAll(s, "-", "")
	if len(s) != 32 {
		return nil, false
	}
	return new(big.Int).SetString(s, 16)
}

func mapRules(rules []documentRule) []ruleContext {
	out := make([]ruleContext, 0, len(rules))
	for _, r := range rules {
		rc := ruleContext{Type: r.Type, Rules: mapRules(r.Rules)}
		for _, c := range r.Conditions {
			cc := conditionContext{Operator: c.Operator, Value: c.Value}
			if c.Property != nil {
				cc.Property = *c.Property
			}
			rc.Conditions = append(rc.Conditions, cc)
		}
		out = append(out, rc)
	}
	return out
}

// groupIdentityOverrides puts identities whose overrides are identical into
// one group, as Flagsmith's SDKs do, so a document with thousands of
// overridden identities compiles into a handful of hash sets.
func groupIdentityOverrides(identities []documentIdentity, types map[string]string) ([]identityOverrideGroup, error) {
	var groups []identityOverrideGroup
	byShape := map[string]int{}
	for i, id := range identities {
		if len(id.IdentityFeatures) == 0 {
			continue
		}
		features := append([]documentFeature(nil), id.IdentityFeatures...)
		for j, fs := range features {
			if fs.Feature == nil {
				return nil, fmt.Errorf("environment document: identity_overrides[%d].identity_features[%d]: feature is missing", i, j)
			}
		}
		sort.SliceStable(features, func(a, b int) bool { return features[a].Feature.Name < features[b].Feature.Name })
		var shape strings.Builder
		overrides := make([]featureContext, 0, len(features))
		for _, fs := range features {
			value := compactJSON(fs.FeatureStateValue)
			if len(value) == 0 {
				value = json.RawMessage("null")
			}
			fmt.Fprintf(&shape, "%s\x00%q\x00%t\x00%s\x00", fs.Feature.ID, fs.Feature.Name, fs.Enabled, value)
			overrides = append(overrides, featureContext{
				Name:     fs.Feature.Name,
				Enabled:  fs.Enabled,
				Value:    value,
				Metadata: json.RawMessage(`{"id":` + fs.Feature.ID.String() + `}`),
				apiID:    fs.Feature.ID.String(),
				apiType:  featureType(types, fs.Feature.ID.String()),
			})
		}
		gi, seen := byShape[shape.String()]
		if !seen {
			gi = len(groups)
			byShape[shape.String()] = gi
			groups = append(groups, identityOverrideGroup{overrides: overrides})
		}
		groups[gi].identifiers = append(groups[gi].identifiers, id.Identifier)
	}
	return groups, nil
}

// parseUpdatedAt reads a document's updated_at: ISO 8601 as Python's
// datetime.fromisoformat accepts it; without a zone it is UTC.
func parseUpdatedAt(s string) (time.Time, error) {
	for _, layout := range []string{
		time.RFC3339Nano,
		"2006-01-02T15:04:05.999999999",
		"2006-01-02 15:04:05.999999999Z07:00",
		"2006-01-02 15:04:05.999999999",
	} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("updated_at %q is not an ISO 8601 time", s)
}
