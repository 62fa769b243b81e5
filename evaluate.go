package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
)

// runEvaluate is `edge-proxy evaluate`: the tool for "why does this user get
// this flag?". Bad input exits with status 2.
func runEvaluate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("evaluate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	document := fs.String("document", "", "environment document JSON to evaluate")
	identifier := fs.String("identifier", "", "identity to evaluate (omit for environment flags)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	var traits traitFlags
	fs.Var(&traits, "trait", "a trait as key=value (repeatable); the value is read as JSON when it parses, else as a string")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: edge-proxy evaluate CONTEXT.json\n       edge-proxy evaluate -document DOC.json [-identifier ID] [-trait key=value]... [-json]\n\n")
		fs.PrintDefaults()
	}
	usage := func(err error) error { return &exitError{2, err} }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usage(err)
	}

	if *document == "" {
		if fs.NArg() != 1 {
			return usage(errors.New("evaluate: give one CONTEXT.json, or -document DOC.json"))
		}
		data, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return usage(err)
		}
		res, err := evaluateContextJSON(data)
		if err != nil {
			return usage(fmt.Errorf("%s: %w", fs.Arg(0), err))
		}
		return printJSON(stdout, res)
	}
	if fs.NArg() > 0 {
		return usage(fmt.Errorf("evaluate: unexpected argument %q with -document", fs.Arg(0)))
	}
	if len(traits) > 0 && *identifier == "" {
		return usage(errors.New("evaluate: -trait needs -identifier"))
	}
	raw, err := os.ReadFile(*document)
	if err != nil {
		return usage(err)
	}
	doc, err := newSnapshot(raw)
	if err != nil {
		return usage(fmt.Errorf("%s: %w", *document, err))
	}
	var id *identity
	if *identifier != "" {
		id = &identity{identifier: *identifier}
		for _, t := range traits {
			id.traits = append(id.traits, trait{key: t.key, value: valueFromJSON(t.value)})
		}
	}
	res := doc.engine.result(id)
	if *asJSON {
		return printJSON(stdout, res)
	}
	return printExplanation(stdout, doc, id, res)
}

type traitFlag struct {
	key   string
	value json.RawMessage
}

// traitFlags collects -trait key=value flags.
type traitFlags []traitFlag

func (t *traitFlags) String() string { return "" }

func (t *traitFlags) Set(s string) error {
	key, val, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return fmt.Errorf("%q is not key=value", s)
	}
	raw := json.RawMessage(val)
	if !json.Valid(raw) || strings.HasPrefix(strings.TrimSpace(val), "{") || strings.HasPrefix(strings.TrimSpace(val), "[") {
		raw, _ = json.Marshal(val)
	}
	*t = append(*t, traitFlag{key, raw})
	return nil
}

func printJSON(w io.Writer, v any) error {
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(out))
	return err
}

// printExplanation prints flags in document order with their reasons, for
// a person.
func printExplanation(w io.Writer, doc *snapshot, id *identity, res evaluationResult) error {
	if id == nil {
		fmt.Fprintf(w, "Environment %q (%s): environment flags, no identity\n", doc.name, doc.clientKey)
	} else {
		key := id.key
		if key == "" {
			key = doc.clientKey + "_" + id.identifier
		}
		fmt.Fprintf(w, "Environment %q (%s), identity %q (hash key %q)\n", doc.name, doc.clientKey, id.identifier, key)
		if len(id.traits) > 0 {
			parts := make([]string, 0, len(id.traits))
			for _, t := range id.traits {
				parts = append(parts, t.key+"="+string(appendPyStr(nil, t.value)))
			}
			fmt.Fprintf(w, "Traits: %s\n", strings.Join(parts, ", "))
		}
	}
	names := make([]string, 0, len(res.Segments))
	for _, s := range res.Segments {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		names = []string{"(none)"}
	}
	fmt.Fprintf(w, "Segments matched: %s\n\n", strings.Join(names, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tENABLED\tVALUE\tVARIANT\tREASON")
	for _, f := range doc.engine.features {
		r := res.Flags[f.name]
		variant := ""
		if string(r.Variant) != "null" {
			variant = strings.Trim(string(r.Variant), `"`)
		}
		value := string(r.Value)
		if len(value) > 40 {
			value = value[:37] + "..."
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\n", r.Name, r.Enabled, value, variant, r.Reason)
	}
	return tw.Flush()
}
