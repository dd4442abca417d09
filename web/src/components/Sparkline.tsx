// A small line chart of one series over the sampled minutes, with its
// current value, range and an optional threshold line.

export interface SparkPoint {
  at: number;
  value: number | null;
}

export function Sparkline(props: {
  title: string;
  points: SparkPoint[];
  format: (v: number) => string;
  threshold?: number;
  empty?: string;
}) {
  const width = 300;
  const height = 64;
  const values = props.points.filter((p): p is { at: number; value: number } => p.value !== null && Number.isFinite(p.value));
  const current = props.points.length ? props.points[props.points.length - 1]!.value : null;
  const top = Math.max(1e-9, ...values.map((p) => p.value), props.threshold ?? 0);
  const first = props.points[0]?.at ?? 0;
  const last = props.points[props.points.length - 1]?.at ?? first + 1;
  const span = Math.max(1, last - first);
  const x = (at: number) => ((at - first) / span) * width;
  const y = (v: number) => height - 4 - (v / top) * (height - 8);
  const path = values.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  const shown =
    current === null ? (props.empty ?? "no data") : Number.isNaN(current) ? "no traffic" : props.format(current);
  return (
    <figure className="chart">
      <figcaption>
        <span>{props.title}</span>
        <strong>{shown}</strong>
      </figcaption>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={`${props.title}: ${shown}`} preserveAspectRatio="none">
        {props.threshold !== undefined && (
          <line x1="0" x2={width} y1={y(props.threshold)} y2={y(props.threshold)} className="threshold" />
        )}
        {values.length > 1 && <path d={path} className="line" />}
      </svg>
      <div className="range muted">
        {values.length > 1 ? `max ${props.format(Math.max(...values.map((p) => p.value)))}` : "collecting samples…"}
      </div>
    </figure>
  );
}
