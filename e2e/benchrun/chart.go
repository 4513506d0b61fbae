package benchrun

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"slices"
	"time"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Series is one latency distribution to draw.
type Series struct {
	Label   string
	Samples []time.Duration
}

var palette = []color.RGBA{{0x1f, 0x77, 0xb4, 0xff}, {0xd6, 0x27, 0x28, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0x94, 0x67, 0xbd, 0xff}}

// WriteChart draws the cumulative distribution of each series (x: latency in ms up to the
// largest p99.9; y: share of commits visible at the edge) as a PNG.
func WriteChart(w io.Writer, title string, series []Series) error {
	const W, H, left, right, top, bottom = 900, 520, 70, 20, 40, 60
	img := image.NewRGBA(image.Rect(0, 0, W, H))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	black := color.RGBA{0, 0, 0, 0xff}
	grey := color.RGBA{0xdd, 0xdd, 0xdd, 0xff}
	sorted := make([][]time.Duration, len(series))
	var xmax time.Duration
	for i, s := range series {
		sorted[i] = slices.Clone(s.Samples)
		slices.Sort(sorted[i])
		if n := len(sorted[i]); n > 0 {
			xmax = max(xmax, sorted[i][min(n-1, int(0.999*float64(n)))])
		}
	}
	if xmax <= 0 {
		xmax = time.Millisecond
	}
	pw, ph := W-left-right, H-top-bottom
	px := func(d time.Duration) int { return left + int(float64(pw)*float64(d)/float64(xmax)) }
	py := func(q float64) int { return top + ph - int(float64(ph)*q) }
	line := func(x0, y0, x1, y1 int, c color.Color) {
		dx, dy := x1-x0, y1-y0
		n := max(abs(dx), abs(dy), 1)
		for i := 0; i <= n; i++ {
			img.Set(x0+dx*i/n, y0+dy*i/n, c)
		}
	}
	text := func(x, y int, s string) {
		d := font.Drawer{Dst: img, Src: image.NewUniform(black), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
	}
	for i := 0; i <= 10; i++ { // grid
		q := float64(i) / 10
		line(left, py(q), left+pw, py(q), grey)
		text(left-40, py(q)+4, fmt.Sprintf("%3.0f%%", q*100))
		x := left + pw*i/10
		line(x, top, x, top+ph, grey)
		text(x-14, top+ph+18, fmt.Sprintf("%.1f", float64(xmax)*float64(i)/10/1e6))
	}
	line(left, top+ph, left+pw, top+ph, black)
	line(left, top, left, top+ph, black)
	text(left+pw/2-110, H-15, "commit -> edge-visible latency (ms)")
	text(left, 20, title)
	for i, s := range sorted {
		c := palette[i%len(palette)]
		n := len(s)
		prevX, prevY := left, py(0)
		for j, d := range s {
			if d > xmax {
				break
			}
			x, y := px(d), py(float64(j+1)/float64(n))
			line(prevX, prevY, x, y, c)
			line(prevX, prevY+1, x, y+1, c)
			prevX, prevY = x, y
		}
		ly := top + 20 + 18*i
		line(left+pw-340, ly-4, left+pw-315, ly-4, c)
		line(left+pw-340, ly-3, left+pw-315, ly-3, c)
		text(left+pw-310, ly, series[i].Label)
	}
	return png.Encode(w, img)
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
