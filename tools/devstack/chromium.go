package devstack

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/websocket"
)

// Chromium drives a headless Chromium (EnsureChromium finds or installs one) to read and
// photograph pages such as the Temporal UI's. Each Open starts one browser process with a fresh
// profile and drives it over the DevTools protocol: a single-page application like the Temporal
// UI renders after its own requests answer, and it keeps a long poll open, so the command line's
// --dump-dom answers before the page rendered and --virtual-time-budget never ends; a Page is
// read when the text it waits for is there.
type Chromium struct {
	// Path of the browser (EnsureChromium).
	Path string
	// Width and Height of the window (default 1400×1000).
	Width, Height int
}

// Page is one page open in a headless Chromium. Close it.
type Page struct {
	cmd     *exec.Cmd
	profile string
	ws      *websocket.Conn
	next    int
	mu      sync.Mutex
}

var devtoolsRE = regexp.MustCompile(`DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)`)

// Open starts the browser and loads url.
func (c Chromium) Open(ctx context.Context, url string) (*Page, error) {
	profile, err := os.MkdirTemp("", "devstack-chromium-")
	if err != nil {
		return nil, fmt.Errorf("chromium profile: %w", err)
	}
	w, h := c.Width, c.Height
	if w <= 0 || h <= 0 {
		w, h = 1400, 1000
	}
	cmd := exec.Command(c.Path,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
		"--no-first-run", "--no-default-browser-check", "--user-data-dir="+profile,
		"--window-size="+strconv.Itoa(w)+","+strconv.Itoa(h),
		"--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=http://127.0.0.1",
		"about:blank")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		_ = os.RemoveAll(profile)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(profile)
		return nil, fmt.Errorf("start chromium: %w", err)
	}
	p := &Page{cmd: cmd, profile: profile}
	port, err := devtoolsPort(ctx, stderr)
	if err != nil {
		_ = p.Close()
		return nil, err
	}
	if err := p.attach(ctx, port); err != nil {
		_ = p.Close()
		return nil, err
	}
	if _, err := p.call(ctx, "Page.navigate", map[string]any{"url": url}); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// devtoolsPort reads the browser's stderr until it names its DevTools port, then drains it.
func devtoolsPort(ctx context.Context, stderr io.Reader) (string, error) {
	found := make(chan string, 1)
	var tail strings.Builder
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			if m := devtoolsRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				found <- m[2]
				sent = true
			} else if !sent && tail.Len() < 4000 {
				tail.WriteString(sc.Text() + "\n")
			}
		}
		if !sent {
			close(found)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	select {
	case port, ok := <-found:
		if !ok {
			return "", errors.New("chromium exited before it opened its DevTools port")
		}
		return port, nil
	case <-ctx.Done():
		return "", fmt.Errorf("chromium did not open its DevTools port: %w", ctx.Err())
	}
}

// attach connects to the browser's first page.
func (p *Page) attach(ctx context.Context, port string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+port+"/json/list", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("chromium targets: %w", err)
	}
	defer resp.Body.Close()
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		return fmt.Errorf("chromium targets: %w", err)
	}
	for _, t := range targets {
		if t.Type == "page" && t.WS != "" {
			ws, err := websocket.Dial(t.WS, "", "http://127.0.0.1")
			if err != nil {
				return fmt.Errorf("chromium page: %w", err)
			}
			ws.MaxPayloadBytes = 64 << 20 // screenshots
			p.ws = ws
			return nil
		}
	}
	return errors.New("chromium has no page to drive")
}

// call sends one DevTools command and returns its result, skipping the events in between.
func (p *Page) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	id := p.next
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(time.Minute)
	}
	if err := p.ws.SetDeadline(dl); err != nil {
		return nil, err
	}
	if err := websocket.JSON.Send(p.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		return nil, fmt.Errorf("chromium %s: %w", method, err)
	}
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(p.ws, &msg); err != nil {
			return nil, fmt.Errorf("chromium %s: %w", method, err)
		}
		if msg.ID != id {
			continue
		}
		if msg.Error != nil {
			return nil, fmt.Errorf("chromium %s: %s", method, msg.Error.Message)
		}
		return msg.Result, nil
	}
}

// eval evaluates a JavaScript expression in the page and returns its string value.
func (p *Page) eval(ctx context.Context, expr string) (string, error) {
	res, err := p.call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return "", err
	}
	var out struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return "", err
	}
	s, _ := out.Result.Value.(string)
	return s, nil
}

// textJS gathers the page's visible text and that of its frames: the Temporal UI renders
// markdown (a workflow's summary and details) in sandboxed iframes, whose documents a script of
// the page cannot read, so their srcdoc is parsed instead.
const textJS = `(() => {
	let t = document.body ? document.body.innerText : "";
	for (const f of document.querySelectorAll("iframe")) {
		let d = null;
		try { d = f.contentDocument; } catch (e) {}
		if (d && d.body && d.body.innerText) {
			t += "\n" + d.body.innerText;
		} else if (f.srcdoc) {
			t += "\n" + new DOMParser().parseFromString(f.srcdoc, "text/html").body.textContent;
		}
	}
	return t;
})()`

// Text returns the page's visible text, its frames' included.
func (p *Page) Text(ctx context.Context) (string, error) {
	return p.eval(ctx, textJS)
}

// HTML returns the page's DOM, serialised.
func (p *Page) HTML(ctx context.Context) (string, error) {
	return p.eval(ctx, `document.documentElement.outerHTML`)
}

// WaitForText polls the page's text (Text) until it holds every one of texts, and returns it;
// when ctx ends first, the error names what was missing.
func (p *Page) WaitForText(ctx context.Context, texts ...string) (string, error) {
	for {
		// A page busy loading may not answer at once: each poll gets a few seconds.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		text, err := p.Text(pctx)
		cancel()
		var missing []string
		for _, t := range texts {
			if !strings.Contains(text, t) {
				missing = append(missing, t)
			}
		}
		if err == nil && len(missing) == 0 {
			return text, nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return text, err
			}
			return text, fmt.Errorf("the page lacks %q: %w", missing, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Screenshot writes a PNG of the page's viewport to file.
func (p *Page) Screenshot(ctx context.Context, file string) error {
	res, err := p.call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		return err
	}
	var out struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &out); err != nil {
		return err
	}
	b, err := base64.StdEncoding.DecodeString(out.Data)
	if err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return fmt.Errorf("screenshot: %w", err)
	}
	return nil
}

// Close ends the browser and removes its profile.
func (p *Page) Close() error {
	if p.ws != nil {
		_ = p.ws.Close()
	}
	if p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
	return os.RemoveAll(p.profile)
}
