package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// cachePath is where an environment's last good document is kept.
func cachePath(dir, clientKey string) string {
	return filepath.Join(dir, "environment-"+filepath.Base(clientKey)+".json")
}

// writeCache persists a document atomically: a crash mid-write leaves the
// previous file, never a torn one.
func writeCache(dir, clientKey string, raw []byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".environment-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(raw); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), cachePath(dir, clientKey))
}

// loadCache publishes every cached document before the first poll, so a
// restart serves the last good flags at once even with the upstream down.
func (s *server) loadCache() {
	for _, env := range s.environments() {
		s.loadCached(env)
	}
}

// loadCached publishes env's cached document, if it has one. A corrupt or
// foreign file is logged and ignored.
func (s *server) loadCached(env *environment) {
	dir := s.config().CacheDir
	if dir == "" || env.pair.DocumentPath != "" {
		return
	}
	path := cachePath(dir, env.pair.ClientSideKey)
	raw, err := readFileLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var snap *snapshot
	if err == nil {
		snap, err = newSnapshot(raw)
	}
	if err == nil && snap.clientKey != env.pair.ClientSideKey {
		err = fmt.Errorf("cached document belongs to another environment (api_key %s)", maskedKey(snap.clientKey))
	}
	if err == nil {
		err = s.publishSnapshot(env, snap, "cache")
	}
	if err != nil {
		s.log.Warn("cached document ignored", "env", env.pair.ClientSideKey, "path", path, "error", err.Error())
		return
	}
	settleMemory(snap)
}
