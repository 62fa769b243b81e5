package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
)

// Loading a configuration: the file and the environment merged over the
// defaults, every value checked against its type and range (configkeys.go),
// and every problem listed at once.

// loadConfig reads the config file (a missing file is fine when the
// environment supplies what is required), applies environment variables and
// validates. Warnings (unknown keys, ignored settings) are returned for the
// caller to log once logging is configured. It is also how a reload reads
// the configuration, so it never blocks on the file (see readRegularFile).
func loadConfig(path string, explicit bool, getenv func(string) string) (Config, []string, error) {
	cfg, _, warnings, err := loadConfigPaths(path, explicit, getenv)
	return cfg, warnings, err
}

// writtenPaths maps each file path resolved from the config file's folder
// to the path as the file wrote it, so that an error about a file can say
// how its path was found.
type writtenPaths map[string]string

// loadConfigPaths is loadConfig, also returning how the file's relative
// paths were resolved.
func loadConfigPaths(path string, explicit bool, getenv func(string) string) (Config, writtenPaths, []string, error) {
	var warnings []string
	merged := map[string]any{}
	fileMissing := false
	var written writtenPaths
	data, err := readRegularFile(path, maxConfigBytes)
	switch {
	case err == nil:
		var fromFile map[string]any
		if err := unmarshalNumbers(data, &fromFile); err != nil {
			return Config{}, nil, nil, fmt.Errorf("config %s: %s", path, describeJSONError(data, err))
		}
		keys := make([]string, 0, len(fromFile))
		for k := range fromFile {
			keys = append(keys, k)
		}
		// Aliases first, so that a canonical key given alongside its alias wins.
		sort.Slice(keys, func(i, j int) bool {
			_, ai := configAliases[keys[i]]
			_, aj := configAliases[keys[j]]
			if ai != aj {
				return ai
			}
			return keys[i] < keys[j]
		})
		for _, k := range keys {
			canonical, ok := canonicalConfigKey(k)
			if !ok {
				warnings = append(warnings, fmt.Sprintf("unknown config key %q ignored", k))
				continue
			}
			merged[canonical] = fromFile[k]
		}
		written = resolveFilePaths(merged, filepath.Dir(path))
	case errors.Is(err, os.ErrNotExist) && !explicit:
		fileMissing = true
		warnings = append(warnings, fmt.Sprintf("config file %s not found; using environment variables and defaults", path))
	default:
		return Config{}, nil, nil, fmt.Errorf("config %s: %w", path, err)
	}

	// The environment wins over the file: an object merges into the file's
	// object key by key (SERVER='{"port": 9000}' keeps the file's host),
	// anything else replaces it. A value that is not JSON is taken as a
	// string, so API_URL=https://… needs no quotes; a key that holds a
	// string (a secret, a path, a URL) always takes the variable verbatim,
	// so ADMIN_TOKEN=12345678901234567890 stays a string.
	// Aliases first here too, so that the canonical variable wins.
	aliases := slices.Sorted(maps.Keys(configAliases))
	for _, k := range append(aliases, configKeys()...) {
		v := getenv(strings.ToUpper(k))
		if v == "" {
			continue
		}
		canonical, _ := canonicalConfigKey(k)
		var value any = v
		if !takesString(canonical) {
			var parsed any
			if unmarshalNumbers([]byte(v), &parsed) == nil {
				value = parsed
			}
		}
		merged[canonical] = mergeJSON(merged[canonical], value)
	}

	// Values of the wrong type are reported first, each once; the keys
	// they leave at their defaults are checked with the rest, so one
	// wrong type hides no other problem.
	cfg := defaultConfig()
	dec := configDecoder{}
	dec.decode(reflect.ValueOf(&cfg).Elem(), merged, "", "")
	warnings = append(warnings, dec.warnings...)
	errs := dec.problems
	if err := cfg.validate(); err != nil {
		for _, e := range problemList(err) {
			if !dec.failedAt(e) {
				errs = append(errs, e)
			}
		}
	}
	sortProblems(errs)
	if len(errs) > 0 {
		if fileMissing {
			// "environment_key_pairs is required" alone would hide the cause.
			abs, _ := filepath.Abs(path)
			errs = slices.Insert(errs, 0, error(fmt.Errorf("config file %s not found (give -config or CONFIG_PATH, or set the keys as environment variables)", abs)))
		}
		return Config{}, nil, warnings, errors.Join(errs...)
	}
	return cfg, written, warnings, nil
}

// unmarshalNumbers decodes JSON keeping numbers as written (json.Number), so
// that a value re-encoded after merging is the value the user wrote.
func unmarshalNumbers(data []byte, v any) error {
	if !json.Valid(data) {
		return json.Unmarshal(data, v) // the syntax error, with its offset
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

// mergeJSON lays over on base: objects merge key by key, recursively;
// anything else in over replaces base.
func mergeJSON(base, over any) any {
	b, bok := base.(map[string]any)
	o, ook := over.(map[string]any)
	if !bok || !ook {
		return over
	}
	out := make(map[string]any, len(b)+len(o))
	maps.Copy(out, b)
	for k, v := range o {
		out[k] = mergeJSON(b[k], v)
	}
	return out
}

// It returns each resolved path with the path as written.
func resolveFilePaths(fromFile map[string]any, dir string) writtenPaths {
	written := writtenPaths{}
	var walk func(v any, at []string) any
	walk = func(v any, at []string) any {
		if len(at) == 0 {
			if p, ok := v.(string); ok && p != "" && !filepath.IsAbs(p) {
				resolved := filepath.Join(dir, p)
				written[resolved] = p
				return resolved
			}
			return v
		}
		switch v := v.(type) {
		case map[string]any:
			if child, ok := v[at[0]]; ok {
				v[at[0]] = walk(child, at[1:])
			}
		case []any:
			if at[0] == "*" {
				for i := range v {
					v[i] = walk(v[i], at[1:])
				}
			}
		}
		return v
	}
	for _, at := range filePaths {
		walk(fromFile, at)
	}
	return written
}

// checkDocumentFiles reports every environment_document_path of cfg that
// does not exist, saying how the path was found (written, how the config
// file at configPath wrote the paths it resolved): a proxy started without
// its document would otherwise answer 503 to every request with only a log
// line to say why. A file that exists but does not load is the file
// watcher's to report (it is retried when it changes).
func checkDocumentFiles(cfg *Config, configPath string, written writtenPaths) error {
	var errs []error
	for i, p := range cfg.EnvironmentKeyPairs {
		if p.DocumentPath == "" {
			continue
		}
		_, err := os.Stat(p.DocumentPath)
		if !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		how := "an absolute path"
		if w, ok := written[p.DocumentPath]; ok {
			dir := filepath.Dir(configPath)
			if abs, err := filepath.Abs(dir); err == nil {
				dir = abs
			}
			how = fmt.Sprintf("%q as written, relative to the config file's folder %s", w, dir)
		} else if !filepath.IsAbs(p.DocumentPath) {
			wd, _ := os.Getwd()
			how = fmt.Sprintf("relative to the working directory %s (not from the config file)", wd)
		}
		errs = append(errs, fmt.Errorf("environment_key_pairs[%d].environment_document_path: %s does not exist (%s)", i, p.DocumentPath, how))
	}
	return errors.Join(errs...)
}

// configDecoder lays the merged file and environment onto the defaults,
// value by value, so that every value of the wrong type is reported, each
// with its key, and the other values are still decoded and checked.
type configDecoder struct {
	problems []error
	warnings []string
	failed   []string // keys whose value was of the wrong type
}

// decode lays raw, a JSON value decoded with json.Number, onto v, which
// holds its default. An object merges field by field, so that
// {"server": {"port": 9000}} keeps the other defaults; anything else
// replaces v, and a list of objects decodes entry by entry. JSON null
// leaves an object as it is, as encoding/json does.
func (d *configDecoder) decode(v reflect.Value, raw any, key, spec string) {
	switch t := v.Type(); {
	case t.Kind() == reflect.Struct:
		if raw == nil {
			return
		}
		obj, ok := raw.(map[string]any)
		if !ok {
			d.wrongType(key, spec, raw)
			return
		}
		known := map[string]bool{}
		for i := range t.NumField() {
			tag := configTag(t.Field(i))
			known[tag] = true
			if child, ok := obj[tag]; ok {
				d.decode(v.Field(i), child, joinKey(key, tag), joinKey(spec, tag))
			}
		}
		for _, name := range slices.Sorted(maps.Keys(obj)) {
			if !known[name] && key != "" { // top-level keys were sorted out already
				d.warnings = append(d.warnings, fmt.Sprintf("unknown config key %q ignored", joinKey(key, name)))
			}
		}
	case isObjectList(t):
		if raw == nil {
			v.SetZero()
			return
		}
		list, ok := raw.([]any)
		if !ok {
			d.wrongType(key, spec, raw)
			return
		}
		out := reflect.MakeSlice(t, len(list), len(list))
		for i, entry := range list {
			d.decode(out.Index(i), entry, fmt.Sprintf("%s[%d]", key, i), spec+"[]")
		}
		v.Set(out)
	default:
		// Decoded into a fresh value, so a failure leaves the default whole.
		fresh := reflect.New(t)
		data, err := json.Marshal(raw)
		if err == nil {
			err = json.Unmarshal(data, fresh.Interface())
		}
		if err != nil {
			d.wrongType(key, spec, raw)
			return
		}
		v.Set(fresh.Elem())
	}
}

// wrongType reports raw, which does not fit the key, and what would.
func (d *configDecoder) wrongType(key, spec string, raw any) {
	d.failed = append(d.failed, key)
	want := "an object"
	shown := true
	if k := configSpecs()[spec]; k != nil {
		want, shown = k.valid(), !k.hidden()
	}
	if !shown {
		d.problems = append(d.problems, fmt.Errorf("%s: %s (not shown: it may hold a secret) is not valid; want %s", key, jsonType(raw), want))
		return
	}
	text, _ := json.Marshal(raw)
	if s, ok := raw.(string); ok {
		text = []byte(maskURL(s))
	}
	d.problems = append(d.problems, fmt.Errorf("%s: %s (%s) is not valid; want %s", key, quoteShort(string(text)), jsonType(raw), want))
}

// failedAt reports whether problem is about a key whose value was of the
// wrong type, or a part of it: that key was reported once already.
func (d *configDecoder) failedAt(problem error) bool {
	key, _, _ := strings.Cut(problem.Error(), ": ")
	for _, f := range d.failed {
		if key == f || strings.HasPrefix(key, f+".") || strings.HasPrefix(key, f+"[") {
			return true
		}
	}
	return false
}

// jsonType names the type of a JSON value decoded with json.Number.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "a list"
	}
	return "an object"
}

// takesString reports whether the top-level key holds a string (a URL, a
// path, a secret).
func takesString(key string) bool {
	t := reflect.TypeFor[Config]()
	for i := range t.NumField() {
		if configTag(t.Field(i)) == key {
			return t.Field(i).Type.Kind() == reflect.String
		}
	}
	return false
}

// describeJSONError turns a syntax error's offset into a line and column.
func describeJSONError(data []byte, err error) string {
	var syn *json.SyntaxError
	if !errors.As(err, &syn) {
		return err.Error()
	}
	line, col := 1, 1
	// Offset counts the offending byte itself.
	for _, c := range data[:min(max(int(syn.Offset)-1, 0), len(data))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return fmt.Sprintf("invalid JSON at line %d, column %d: %v", line, col, err)
}

// filePaths are where config.json holds file paths, as object keys ("*"
// walks an array's elements). Relative ones are relative to the file's
// folder, so a config works from whatever directory the proxy starts in.
var filePaths = [][]string{
	{"cache_dir"},
	{"environment_key_pairs", "*", "environment_document_path"},
	{"server", "tls", "cert_file"},
	{"server", "tls", "key_file"},
}
