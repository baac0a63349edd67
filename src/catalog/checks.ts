import type { EffectiveCheck } from '../schema/answers.js';
import { own, type CheckOverride, type Target } from '../schema/index.js';
import type { Catalog, Check } from './build.js';
import { groupChain, targetLabels } from './labels.js';

const UNIT_SECONDS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };

/** "1h30m" → 5400. The schema has already checked the form. */
export function durationSeconds(duration: string): number {
  let total = 0;
  for (const [, value, unit] of duration.matchAll(/(\d+)(ms|s|m|h|d|w|y)/g)) total += Number(value) * UNIT_SECONDS[unit!]!;
  return total;
}

/**
 * The checks that apply to a target, with their settings. Lowest precedence first: the
 * check's own settings, the overrides of the target's further groups, those of its primary
 * group's chain from the root down (the nearest group wins), the target's own override.
 * A check whose `requires_labels` the target lacks does not apply, whatever it enables.
 */
export function effectiveChecks(catalog: Catalog, target: Target): EffectiveCheck[] {
  const groupOrder = [...target.groups].reverse().concat(target.primary_group).flatMap((id) => groupChain(catalog.groups, id).reverse().map((g) => g.id));
  const labels = targetLabels(catalog, target);
  const result: EffectiveCheck[] = [];
  for (const check of [...catalog.checks.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const { policy } = check;
    const settings: Required<CheckOverride> = { enabled: policy.enabled, interval: policy.interval, timeout: policy.timeout, args: policy.args };
    for (const override of [...groupOrder.map((id) => own(policy.groups, id)), own(policy.targets, target.hostname)]) {
      if (override) Object.assign(settings, Object.fromEntries(Object.entries(override).filter(([, v]) => v !== undefined)));
    }
    // "{{gpu_count}}" in an argument is the target's label of that name (empty when it has none).
    settings.args = settings.args.map((arg) => arg.replace(/\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}/g, (_, name: string) => own(labels, name) ?? ''));
    const labelled = policy.requires_labels.every((name) => (own(labels, name) ?? '') !== '');
    if (settings.enabled && labelled) result.push(view(check, settings));
  }
  return result;
}

function view(check: Check, settings: Required<CheckOverride>): EffectiveCheck {
  return {
    name: check.name,
    description: check.policy.description ?? '',
    script: check.policy.script,
    sha256: check.script.sha256,
    // Whole seconds, as the timeout: a node's dynamic-check.sh runs only whole numbers (1500ms would never run).
    interval_seconds: Math.max(1, Math.ceil(durationSeconds(settings.interval))),
    timeout_seconds: Math.max(1, Math.ceil(durationSeconds(settings.timeout))),
    args: settings.args,
  };
}
