package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
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
	usage := func(err error) error { return &exitError{2, err} }
	if done, err := parseArgs(fs, args, "Usage: edge-proxy evaluate CONTEXT.json\n       edge-proxy evaluate -document DOC.json [-identifier ID] [-trait key=value]... [-json]\n\n"); done {
		return err
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
	if *asJSON {
		return printJSON(stdout, doc.engine.result(id))
	}
	return printExplanation(stdout, doc, id)
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

// printExplanation prints the explanation (explain.go) for a person: the
// flags in document order with their reasons, server-only features marked,
// the segments matched, and for each other segment the rule that failed and
// what its condition read.
func printExplanation(w io.Writer, doc *snapshot, id *identity) error {
	ex := doc.explain(id)
	if id == nil {
		fmt.Fprintf(w, "Environment %q (%s): environment flags, no identity\n", doc.name, doc.clientKey)
	} else {
		fmt.Fprintf(w, "Environment %q (%s), identity %q (hash key %q)\n", doc.name, doc.clientKey, ex.Identifier, ex.IdentityKey)
		if len(id.traits) > 0 {
			parts := make([]string, 0, len(id.traits))
			for _, t := range id.traits {
				parts = append(parts, t.key+"="+string(appendPyStr(nil, t.value)))
			}
			fmt.Fprintf(w, "Traits: %s\n", strings.Join(parts, ", "))
		}
	}
	names := slices.Sorted(slices.Values(ex.Segments))
	if len(names) == 0 {
		names = []string{"(none)"}
	}
	fmt.Fprintf(w, "Segments matched: %s\n\n", strings.Join(names, ", "))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tENABLED\tVALUE\tVARIANT\tREASON")
	for _, f := range ex.Flags {
		variant := ""
		if string(f.Variant) != "null" {
			variant = strings.Trim(string(f.Variant), `"`)
		}
		value := string(f.Value)
		if len(value) > 40 {
			value = value[:37] + "..."
		}
		note := ""
		switch {
		case f.ServerOnly:
			note = "  [server-only: client keys never see it]"
		case f.HiddenFromClientKeys:
			note = "  [hidden from client keys: disabled, and the project hides disabled flags]"
		}
		fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s%s\n", f.Feature, f.Enabled, value, variant, f.Reason, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(ex.SegmentsNotMatched) > 0 {
		fmt.Fprintf(w, "\nSegments not matched:\n")
	}
	for _, m := range ex.SegmentsNotMatched {
		fmt.Fprintf(w, "  %s (key %s): %s\n", m.Name, m.Key, m.Why)
		printRuleMiss(w, m.Rule, "    ")
	}
	return nil
}

// printRuleMiss prints a failed rule, its conditions and what they read,
// then its failed sub-rule one level deeper.
func printRuleMiss(w io.Writer, r *ruleMiss, indent string) {
	for ; r != nil; r, indent = r.SubRule, indent+"  " {
		fmt.Fprintf(w, "%s%s rule: %s\n", indent, r.Type, r.Why)
		for _, c := range r.Conditions {
			read := string(c.Read)
			if read == "null" {
				read = "not set"
			}
			if c.Percentage != nil {
				read += fmt.Sprintf(" (percentage %.4f)", *c.Percentage)
			}
			fmt.Fprintf(w, "%s  %s %s %q: read %s, holds %t\n", indent, c.Property, c.Operator, c.Value, read, c.Holds)
		}
	}
}
