export * from './common.js';
export * from './describe.js';
export * from './group.js';
export * from './settings.js';
export * from './target.js';
export * from './token.js';
export * from './api.js';
export * from './check.js';
