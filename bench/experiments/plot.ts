/**
 * Line plots of an experiment's results, written as SVG and PNG without a browser: a Vega-Lite spec is
 * compiled to Vega, rendered headless to SVG, and the SVG rasterised by resvg. Each series is one line of
 * medians with a band (or bars) from the smallest to the largest repeat, so that the spread shows.
 *
 *   await writePlot(dir, 'latency', { title, x: { title: 'threads' }, y: { title: 'latency (ms/packet)' },
 *                                     points: [{ series: 'nfstate', x: 1, median: 0.4, min: 0.3, max: 0.5 }] });
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TopLevelSpec } from 'vega-lite';
import { loadOptional } from '../optional.js';

export interface PlotPoint {
  series: string;
  x: number;
  median: number;
  min: number;
  max: number;
}

export interface Axis {
  title: string;
  /** A log scale, for figures that span orders of magnitude (nfstate next to the thesis's prototype). */
  log?: boolean;
  /** Whole numbers only on the axis (threads, instances). */
  integer?: boolean;
  /**
   * Names for the values of x, for categories (x = 1, 2, … each named). Bars of several series in one
   * category are set apart by their x (1 - 0.2, 1 + 0.2), the label goes on the whole number.
   */
  labels?: Record<number, string>;
}

export interface Plot {
  title: string;
  x: Axis;
  y: Axis;
  points: PlotPoint[];
  /** Bars at each x instead of lines: events such as one batch's bytes, not a trend. */
  bars?: boolean;
}

/** Writes `<name>.svg` and `<name>.png` into `dir`; returns their file names. */
export async function writePlot(dir: string, name: string, plot: Plot): Promise<string[]> {
  const svg = await renderSvg(plot);
  const { Resvg } = await loadOptional('@resvg/resvg-js', 'PNG plots', () => import('@resvg/resvg-js'));
  const png = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: 2 },
    font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' },
  })
    .render()
    .asPng();
  await writeFile(join(dir, `${name}.svg`), svg);
  await writeFile(join(dir, `${name}.png`), png);
  return [`${name}.svg`, `${name}.png`];
}

export async function renderSvg(plot: Plot): Promise<string> {
  const vega = await loadOptional('vega', 'plots', () => import('vega'));
  const { compile } = await loadOptional('vega-lite', 'plots', () => import('vega-lite'));
  const view = new vega.View(vega.parse(compile(spec(plot)).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function spec(plot: Plot): TopLevelSpec {
  const bars = plot.bars === true;
  // Bars stand on zero; lines show their range.
  const scale = (a: Axis): Record<string, unknown> => (a.log === true ? { type: 'log' } : { zero: bars });
  const x = {
    field: 'x',
    type: 'quantitative',
    title: plot.x.title,
    scale:
      plot.x.labels !== undefined
        ? { domain: [0.5, Object.keys(plot.x.labels).length + 0.5] }
        : bars
          ? { domainMin: 0 }
          : scale(plot.x),
    ...(plot.x.integer === true ? { axis: { tickMinStep: 1, format: 'd' } } : {}),
    ...(plot.x.labels === undefined
      ? {}
      : {
          axis: {
            values: Object.keys(plot.x.labels).map(Number),
            labelExpr: `${JSON.stringify(plot.x.labels)}[datum.value]`,
          },
        }),
  } as const;
  const color = {
    field: 'series',
    type: 'nominal',
    title: null,
    legend: { orient: 'bottom', direction: 'vertical', labelLimit: 600 },
  } as const;
  // What the thesis published is drawn dashed, what was measured here solid.
  const values = plot.points.map((p) => ({
    ...p,
    source: p.series.startsWith('thesis') ? 'thesis (published)' : 'measured',
  }));
  const spread = plot.points.some((p) => p.min !== p.max);
  const published = values.some((v) => v.source !== 'measured');
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: plot.title,
    width: 520,
    height: 300,
    background: 'white',
    data: { values },
    layer: [
      ...(spread
        ? [
            {
              mark: { type: 'errorbar', ticks: true } as const,
              encoding: {
                x,
                y: { field: 'min', type: 'quantitative', scale: scale(plot.y), title: plot.y.title },
                y2: { field: 'max' },
                color,
              },
            },
          ]
        : []),
      {
        mark: bars
          ? { type: 'bar', width: plot.x.labels === undefined ? 4 : 36, opacity: 0.7 }
          : { type: 'line', point: true },
        encoding: {
          x,
          // Bars of different series at the same x overlap rather than pile up: each is its own amount.
          y: {
            field: 'median',
            type: 'quantitative',
            title: plot.y.title,
            scale: scale(plot.y),
            ...(bars ? { stack: null } : {}),
          },
          color,
          ...(published
            ? { strokeDash: { field: 'source', type: 'nominal', title: null, legend: { orient: 'bottom' } } }
            : {}),
        },
      },
    ],
  } as TopLevelSpec;
}
