package devstack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
)

// Chromium drives a headless Chromium (EnsureChromium finds or installs one) to read and
// photograph pages such as the Temporal UI's: each call is one browser process with a fresh
// profile, which runs the page's scripts for VirtualTime of virtual time before it answers.
type Chromium struct {
	// Path of the browser (EnsureChromium).
	Path string
	// VirtualTimeMS is --virtual-time-budget: how long, in virtual milliseconds, the page's
	// scripts run before the DOM is read or the screenshot taken (default 10000).
	VirtualTimeMS int
	// Width and Height of the window (default 1400×1000).
	Width, Height int
}

func (c Chromium) args(extra ...string) ([]string, func(), error) {
	profile, err := os.MkdirTemp("", "devstack-chromium-")
	if err != nil {
		return nil, nil, fmt.Errorf("chromium profile: %w", err)
	}
	vt, w, h := c.VirtualTimeMS, c.Width, c.Height
	if vt <= 0 {
		vt = 10000
	}
	if w <= 0 || h <= 0 {
		w, h = 1400, 1000
	}
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--no-first-run", "--no-default-browser-check", "--user-data-dir=" + profile,
		"--window-size=" + strconv.Itoa(w) + "," + strconv.Itoa(h),
		"--virtual-time-budget=" + strconv.Itoa(vt),
	}
	return append(args, extra...), func() { _ = os.RemoveAll(profile) }, nil
}

func (c Chromium) run(ctx context.Context, extra ...string) ([]byte, error) {
	args, cleanup, err := c.args(extra...)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var out, errOut bytes.Buffer
	cmd := exec.CommandContext(ctx, c.Path, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("chromium %v: %w\n%s", extra, err, tail(errOut.Bytes(), 2000))
	}
	return out.Bytes(), nil
}

// DumpDOM returns the page's DOM, serialised after its scripts ran (--dump-dom).
func (c Chromium) DumpDOM(ctx context.Context, url string) (string, error) {
	out, err := c.run(ctx, "--dump-dom", url)
	return string(out), err
}

// Screenshot writes a PNG of the page to file (--screenshot).
func (c Chromium) Screenshot(ctx context.Context, url, file string) error {
	if _, err := c.run(ctx, "--screenshot="+file, url); err != nil {
		return err
	}
	if st, err := os.Stat(file); err != nil || st.Size() == 0 {
		return fmt.Errorf("chromium wrote no screenshot to %s (%v)", file, err)
	}
	return nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
