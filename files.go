package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// This file is how the proxy reads files: bounded reads of regular files
// only (readRegularFile), one way to notice a change (fileChange) used by
// the document, config and certificate watchers, and atomic writes.

// fileCheckInterval is how often an offline document's file is checked for
// changes: cheap (one stat), and quick enough for a person editing it.
const fileCheckInterval = time.Second

// watchFile serves an environment from a local document and reloads it when
// the file changes. A file that does not load is logged once and read again
// only when it changes; meanwhile the last good document, if any, is served.
func (s *server) watchFile(ctx context.Context, env *environment) {
	var change fileChange
	lastProblem := "" // logged once until it changes or a good load clears it
	for {
		if change.changed(env.pair.DocumentPath) {
			began := time.Now()
			raw, err := readFileLimited(env.pair.DocumentPath)
			if err == nil {
				_, err = s.publish(env, raw, "file")
			}
			s.recordPoll(env, pollResult{began: began, took: time.Since(began), err: err})
			switch {
			case err == nil:
				lastProblem = ""
			case err.Error() != lastProblem:
				lastProblem = err.Error()
				msg := "document file not loaded; serving the last good document"
				if env.snap.Load() == nil {
					msg = "document file not loaded; nothing to serve until it loads"
				}
				s.log.Error(msg, "env", env.pair.ClientSideKey, "path", env.pair.DocumentPath, "error", lastProblem)
			}
		} else if lastProblem == "" {
			s.markSuccess(env)
		}
		refreshed, ok := env.wait(ctx, fileCheckInterval)
		if !ok {
			return
		}
		if refreshed {
			change.forget() // a refresh re-reads the file
		}
	}
}

func readFileLimited(path string) ([]byte, error) {
	return readRegularFile(path, maxDocumentBytes)
}

// readRegularFile reads a whole file of at most limit bytes. Anything but a
// regular file is refused before it is read: a FIFO would block the reader
// until a writer came (start-up before the port opens, or shutdown, hung),
// and a device may never end. The open itself does not block (O_NONBLOCK
// only matters for such files), and the check is made on the opened file,
// so a file swapped between a check and the open is caught too.
func readRegularFile(path string, limit int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fileKind(fi.Mode()))
	}
	raw, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(raw)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return raw, nil
}

// fileKind names a file type for an error message.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// fileChange notices that files changed since it last looked: another
// size, modification time or inode (a rewrite in place, or a replaced file
// or symlink target, which is how Kubernetes updates a mounted Secret). A
// file that is missing is a state too: its return is a change. Callers look
// before they read, so a write during the read is seen by the next look; and
// a file that failed to load is read again only once it changes.
//
// The zero value has seen nothing: its first look reports a change. It is
// not safe for concurrent use.
type fileChange struct {
	seen   []os.FileInfo
	primed bool
}

// changed stats paths and reports whether any of them differs from the
// last look.
func (c *fileChange) changed(paths ...string) bool {
	now := make([]os.FileInfo, len(paths))
	for i, p := range paths {
		now[i], _ = os.Stat(p)
	}
	same := c.primed && len(now) == len(c.seen)
	for i := 0; same && i < len(now); i++ {
		same = sameFile(now[i], c.seen[i])
	}
	c.seen, c.primed = now, true
	return !same
}

// forget makes the next look report a change, so the files are read again.
func (c *fileChange) forget() { c.primed = false }

func sameFile(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
}

// writeFileAtomic replaces path with data: a crash mid-write leaves the
// previous file, never a torn one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(data); err != nil {
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
	return os.Rename(tmp.Name(), path)
}
