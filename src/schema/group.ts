import { z } from 'zod';
import { labels, slug } from './common.js';

/** groups/<id>.yaml */
export const groupFile = z.strictObject({
  id: slug,
  name: z.string().min(1, 'must not be empty').max(200),
  namespace: slug,
  parent: slug.nullish(),
  description: z.string().max(2000).optional(),
  labels: labels.default({}),
});

export type Group = z.infer<typeof groupFile>;
