package main

import "encoding/json"

// A document is decoded one small object at a time: every name, key and
// value its own allocation, scattered among the decoder's garbage. Once that
// garbage is collected, the pages holding the survivors stay partly empty,
// and for a document of thousands of features that waste rivals the engine
// itself. pack copies the engine's long-lived strings and values into one
// string and one byte buffer (identical ones once), so that they cost their
// bytes and the scattered originals are garbage too.
func (e *engine) pack() {
	// Sized for the usual case (a handful of strings and values per source
	// and segment), so that the maps are not grown step by step.
	n := len(e.sources) + len(e.segments)
	p := packer{
		textAt:  make(map[string]int, 2*n),
		strs:    make([]packedRef[string], 0, 5*n),
		bytesAt: make(map[string]int, n),
		raws:    make([]packedRef[json.RawMessage], 0, 2*n),
	}
	// Variants move to one array too (their own slices are as scattered).
	nVariants := 0
	for _, f := range e.sources {
		nVariants += len(f.variants)
	}
	variants := make([]variant, 0, nVariants)
	for _, f := range e.sources {
		if len(f.variants) > 0 {
			start := len(variants)
			variants = append(variants, f.variants...)
			f.variants = variants[start:len(variants):len(variants)]
		}
		p.str(&f.name)
		p.str(&f.key)
		p.str(&f.apiID)
		p.str(&f.apiType)
		p.raw(&f.value)
		p.raw(&f.metadata)
		for i := range f.variants {
			v := &f.variants[i]
			p.raw(&v.key)
			p.raw(&v.value)
			p.str(&v.reason)
		}
	}
	for i := range e.segments {
		s := &e.segments[i]
		p.str(&s.key)
		p.str(&s.name)
		p.str(&s.reason)
		p.raw(&s.metadata)
		p.rules(s.rules)
	}
	p.finish()
	// The index's keys are strings too: rebuilt on the packed names.
	e.featureIndex = make(map[string]int, len(e.features))
	for i := range e.features {
		e.featureIndex[e.features[i].name] = i
	}
}

// packer collects the strings and values to pack, then points each at its
// copy (finish). The zero value is ready; pack sizes its maps up front.
type packer struct {
	text    []byte
	textAt  map[string]int
	strs    []packedRef[string]
	bytes   []byte
	bytesAt map[string]int
	raws    []packedRef[json.RawMessage]
}

type packedRef[T any] struct {
	to        *T
	off, size int
}

func (p *packer) str(s *string) {
	if *s == "" {
		return
	}
	if p.textAt == nil {
		p.textAt = map[string]int{}
	}
	off, ok := p.textAt[*s]
	if !ok {
		off = len(p.text)
		p.textAt[*s] = off
		p.text = append(p.text, *s...)
	}
	p.strs = append(p.strs, packedRef[string]{to: s, off: off, size: len(*s)})
}

func (p *packer) raw(b *json.RawMessage) {
	if len(*b) == 0 {
		return
	}
	if p.bytesAt == nil {
		p.bytesAt = map[string]int{}
	}
	off, ok := p.bytesAt[string(*b)]
	if !ok {
		off = len(p.bytes)
		p.bytesAt[string(*b)] = off
		p.bytes = append(p.bytes, *b...)
	}
	p.raws = append(p.raws, packedRef[json.RawMessage]{to: b, off: off, size: len(*b)})
}

func (p *packer) rules(rules []rule) {
	for i := range rules {
		for j := range rules[i].conditions {
			p.str(&rules[i].conditions[j].text)
		}
		p.rules(rules[i].rules)
	}
}

// finish points every recorded string and value at its packed copy.
func (p *packer) finish() {
	text := string(p.text)
	for _, r := range p.strs {
		*r.to = text[r.off : r.off+r.size]
	}
	packed := append([]byte(nil), p.bytes...)
	for _, r := range p.raws {
		*r.to = packed[r.off : r.off+r.size : r.off+r.size]
	}
}

// slab hands out values and short slices from shared blocks, so that the
// thousands of small pieces a large document compiles to (overrides, rules,
// conditions) are a few allocations instead of one each, for the same
// reason as pack.
type slab[T any] struct{ block []T }

const slabBlock = 128

// add stores v and returns where.
func (s *slab[T]) add(v T) *T {
	if len(s.block) == cap(s.block) {
		s.block = make([]T, 0, slabBlock)
	}
	s.block = append(s.block, v)
	return &s.block[len(s.block)-1]
}

// take returns an empty slice with room for n values.
func (s *slab[T]) take(n int) []T {
	if n > slabBlock/4 {
		return make([]T, 0, n)
	}
	if cap(s.block)-len(s.block) < n {
		s.block = make([]T, 0, slabBlock)
	}
	start := len(s.block)
	s.block = s.block[:start+n]
	return s.block[start : start : start+n]
}
