// Drives a Clerk Backend API (the simulator, `invite-sync clerk-sim`) with Clerk's JavaScript
// backend SDK, @clerk/backend, as an application would: invitations, users, organizations,
// organization invitations and memberships, and a refusal read through the SDK's error.
//
// Environment: CLERK_API_URL (the server's root, without /v1: the SDK adds its API version),
// CLERK_SECRET_KEY, and CLERK_SIM_CONTROL_URL (the simulator's /_sim control API, used to make
// users, as Clerk's dashboard or a sign-up would). With WEBHOOK_LISTEN_PORT and
// CLERK_WEBHOOK_SIGNING_SECRET it also receives the simulator's webhooks on that port, checks
// each with the SDK's verifyWebhook, and ends with a step that waits for every event type the
// calls raise.
//
// Prints one JSON object: {"sdk", "node", "steps": [{"name", "ok", "detail" | "error"}],
// "passed", "failed"}. Each step checks what the SDK returned; a failed step records the
// request's answer (status, Clerk error code) and the run goes on. Exits 1 when a step failed,
// 2 when the environment is incomplete.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createClerkClient } from '@clerk/backend';
import { isClerkAPIResponseError } from '@clerk/backend/errors';
import { verifyWebhook } from '@clerk/backend/webhooks';

const apiUrl = process.env.CLERK_API_URL;
const secretKey = process.env.CLERK_SECRET_KEY;
const controlUrl = process.env.CLERK_SIM_CONTROL_URL;
const missing = Object.entries({ CLERK_API_URL: apiUrl, CLERK_SECRET_KEY: secretKey, CLERK_SIM_CONTROL_URL: controlUrl })
  .filter(([, value]) => !value)
  .map(([name]) => name);
if (missing.length > 0) {
  console.error(`missing environment variables: ${missing.join(', ')}`);
  process.exit(2);
}

const sdkVersion = JSON.parse(
  readFileSync(new URL('./node_modules/@clerk/backend/package.json', import.meta.url), 'utf8'),
).version;
const clerk = createClerkClient({ secretKey, apiUrl, telemetry: { disabled: true } });

// ---------------------------------------------------------------------------
// Steps and checks

const steps = [];
const state = {};

class CheckFailed extends Error {}

function check(condition, message, actual) {
  if (!condition) {
    const shown = actual === undefined ? '' : `; got ${JSON.stringify(actual)}`;
    throw new CheckFailed(`${message}${shown}`);
  }
}

// JSON with every object's keys sorted, so that key order never decides equality.
function canonical(value) {
  return JSON.stringify(value, (_key, v) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, v[k]]))
      : v,
  );
}

function equal(actual, expected, what) {
  check(canonical(actual) === canonical(expected), `${what}: expected ${JSON.stringify(expected)}`, actual);
}

// What a failed call looked like: the SDK's error (status and Clerk codes), a check that did
// not hold, or anything else thrown.
function describe(error) {
  if (isClerkAPIResponseError(error)) {
    return {
      kind: 'clerk_api_error',
      status: error.status,
      codes: (error.errors ?? []).map((e) => e.code),
      messages: (error.errors ?? []).map((e) => e.longMessage ?? e.message),
      clerk_trace_id: error.clerkTraceId || null,
    };
  }
  if (error instanceof CheckFailed) {
    return { kind: 'check', message: error.message };
  }
  return { kind: 'exception', message: String(error?.stack ?? error) };
}

// Runs one step unless a step it needs failed; `needs` names keys of `state`.
async function step(name, needs, body) {
  const absent = needs.filter((key) => state[key] === undefined);
  if (absent.length > 0) {
    steps.push({ name, ok: false, error: { kind: 'skipped', message: `needs ${absent.join(', ')}` } });
    return;
  }
  try {
    const detail = await body();
    steps.push({ name, ok: true, detail: detail ?? null });
  } catch (error) {
    steps.push({ name, ok: false, error: describe(error) });
  }
}

// A call that must be refused: returns the SDK's error, or fails when the call succeeded.
async function refused(call) {
  try {
    const value = await call();
    throw new CheckFailed(`the call succeeded: ${JSON.stringify(value)}`);
  } catch (error) {
    if (!isClerkAPIResponseError(error)) {
      throw error;
    }
    return error;
  }
}

// A step whose call must be refused with `status` and one of `codes` as errors[0].code.
async function refusal(name, needs, call, status, codes) {
  await step(name, needs, async () => {
    const error = await refused(call);
    equal(error.status, status, 'status');
    const code = error.errors[0]?.code;
    check(codes.includes(code), `errors[0].code one of ${codes.join(', ')}`, code);
    check(typeof error.clerkTraceId === 'string' && error.clerkTraceId.length > 0, 'a clerkTraceId', error.clerkTraceId);
    return { status: error.status, code };
  });
}

// The fields each resource's fromJSON reads that the spec requires (and, for the Backend API,
// the private metadata and an invitation's organization and status): the answer must hold
// each (null where the spec allows it), else the SDK's object shows `undefined`.
const FIELDS = {
  invitation: ['object', 'id', 'email_address', 'public_metadata', 'status', 'created_at', 'updated_at'],
  organization: [
    'object', 'id', 'name', 'slug', 'has_image', 'max_allowed_memberships', 'admin_delete_enabled',
    'public_metadata', 'private_metadata', 'created_at', 'updated_at',
  ],
  organization_invitation: [
    'object', 'id', 'email_address', 'role', 'role_name', 'organization_id', 'status', 'public_metadata',
    'private_metadata', 'url', 'expires_at', 'created_at', 'updated_at',
  ],
  organization_membership: [
    'object', 'id', 'role', 'permissions', 'public_metadata', 'private_metadata', 'organization',
    'public_user_data', 'created_at', 'updated_at',
  ],
  public_user_data: ['user_id', 'first_name', 'last_name', 'image_url', 'has_image', 'identifier'],
};

function shaped(resource, kind) {
  const raw = kind === 'public_user_data' ? resource : resource?.raw;
  check(raw && typeof raw === 'object', `${kind}: the SDK kept the answer`, raw);
  const absent = FIELDS[kind].filter((field) => !(field in raw));
  check(absent.length === 0, `${kind} ${raw.id ?? ''}: fields the SDK reads are missing: ${absent.join(', ')}`);
  if (kind !== 'public_user_data') {
    equal(raw.object, kind, `${kind}: object`);
    check(Number.isInteger(raw.created_at) && Number.isInteger(raw.updated_at), `${kind}: timestamps in ms`, raw.created_at);
  }
  if (kind === 'organization_membership') {
    shaped(resource.organization, 'organization');
    shaped(raw.public_user_data, 'public_user_data');
  }
  return resource;
}

async function control(method, path, body) {
  const response = await fetch(`${controlUrl}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  check(response.ok, `${method} /_sim${path} answered ${response.status}`, text);
  return JSON.parse(text);
}

const ids = (items) => items.map((item) => item.id);
const sorted = (values) => [...values].sort();
const emailsOf = (items) => sorted(items.map((item) => item.emailAddress));

// A page as the SDK returns a paginated answer: {data, totalCount}.
function page(result, what) {
  check(result && Array.isArray(result.data), `${what}: a {data, totalCount} page`, result);
  check(Number.isInteger(result.totalCount), `${what}: totalCount is an integer`, result.totalCount);
  return result;
}

// ---------------------------------------------------------------------------
// Webhooks, when asked for: every delivery verified as an application would verify it

const webhookPort = process.env.WEBHOOK_LISTEN_PORT;
const signingSecret = process.env.CLERK_WEBHOOK_SIGNING_SECRET;
const deliveries = [];
let webhookServer = null;
if (webhookPort && signingSecret) {
  webhookServer = createServer(async (incoming, outgoing) => {
    const chunks = [];
    for await (const chunk of incoming) {
      chunks.push(chunk);
    }
    const request = new Request(`http://127.0.0.1${incoming.url}`, {
      method: incoming.method,
      headers: Object.entries(incoming.headers).filter(([, value]) => typeof value === 'string'),
      body: Buffer.concat(chunks),
    });
    try {
      const event = await verifyWebhook(request, { signingSecret });
      deliveries.push({ ok: true, type: event.type, data: event.data });
      outgoing.writeHead(200).end();
    } catch (error) {
      deliveries.push({ ok: false, error: String(error?.message ?? error) });
      outgoing.writeHead(400).end();
    }
  });
  await new Promise((resolve, reject) => {
    webhookServer.once('error', reject);
    webhookServer.listen(Number(webhookPort), '127.0.0.1', resolve);
  });
}

// Waits until `ready()` holds, checking every 20 ms, for at most `ms`; whether it held.
async function waitFor(ready, ms) {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() >= deadline) {
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}

// Addresses unique to this run, so that it can also run against a long-lived simulator.
const tag = `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`;
const address = (name) => `${name}.${tag}@example.com`;

// ---------------------------------------------------------------------------
// Users

const ada = address('ada');
const bob = address('bob');
const cyd = address('cyd');

await step('seed users (control API)', [], async () => {
  const seeded = await control('POST', '/users', { email_addresses: [ada, bob, cyd] });
  check(Array.isArray(seeded.users) && seeded.users.length === 3, 'three users', seeded);
  state.users = Object.fromEntries(seeded.users.map((user, i) => [[ada, bob, cyd][i], user.id]));
  return { users: state.users };
});

await step('users.getUserList({ emailAddress })', ['users'], async () => {
  const unknown = address('nobody');
  const list = page(await clerk.users.getUserList({ emailAddress: [ada, bob, unknown] }), 'getUserList');
  equal(sorted(list.data.map((user) => user.primaryEmailAddress?.emailAddress)), sorted([ada, bob]), 'the users found');
  equal(sorted(ids(list.data)), sorted([state.users[ada], state.users[bob]]), 'their ids');
  equal(list.totalCount, 2, 'totalCount');
  return { found: list.data.length, totalCount: list.totalCount };
});

await step('users.getUserList({ limit, offset })', ['users'], async () => {
  const first = page(await clerk.users.getUserList({ limit: 1 }), 'getUserList limit 1');
  check(first.data.length === 1, 'one user on a page of 1', first.data.length);
  check(first.totalCount >= 3, 'totalCount counts every user, not the page', first.totalCount);
  const second = page(await clerk.users.getUserList({ limit: 1, offset: 1 }), 'getUserList offset 1');
  check(second.data.length === 1 && second.data[0].id !== first.data[0].id, 'offset 1 gives another user', ids(second.data));
  return { totalCount: first.totalCount };
});

await step('users.getUser', ['users'], async () => {
  const user = await clerk.users.getUser(state.users[cyd]);
  equal(user.id, state.users[cyd], 'id');
  equal(user.primaryEmailAddress?.emailAddress, cyd, 'primary email address');
  equal(user.emailAddresses.length, 1, 'email addresses');
  return { id: user.id };
});

await step('users.getCount', ['users'], async () => {
  const all = await clerk.users.getCount();
  check(Number.isInteger(all) && all >= 3, 'a count of at least the three users', all);
  const some = await clerk.users.getCount({ emailAddress: [ada, cyd, address('nobody')] });
  equal(some, 2, 'count of two known addresses and an unknown one');
  return { all, some };
});

await refusal(
  'users.getUser refused: unknown id',
  [],
  () => clerk.users.getUser('user_doesnotexist000000000000'),
  404,
  ['resource_not_found'],
);

// ---------------------------------------------------------------------------
// Instance invitations

const ivy = address('ivy');
const jan = address('jan');
const kit = address('kit');

await step('invitations.createInvitation', [], async () => {
  const invitation = shaped(
    await clerk.invitations.createInvitation({
      emailAddress: ivy,
      publicMetadata: { team: 'red', nested: { camelCase: 1 } },
      redirectUrl: 'https://app.example.com/welcome',
      expiresInDays: 7,
      notify: false,
    }),
    'invitation',
  );
  equal(invitation.emailAddress, ivy, 'emailAddress');
  equal(invitation.status, 'pending', 'status');
  equal(invitation.publicMetadata, { team: 'red', nested: { camelCase: 1 } }, 'publicMetadata (nested keys as sent)');
  check(/^inv_/.test(invitation.id), 'an inv_ id', invitation.id);
  state.invitation = invitation.id;
  return { id: invitation.id };
});

await step('invitations.createInvitationBulk', [], async () => {
  const created = await clerk.invitations.createInvitationBulk([
    { emailAddress: jan, notify: false },
    { emailAddress: kit, publicMetadata: { team: 'blue' }, notify: false },
  ]);
  check(Array.isArray(created), 'an array of invitations', created);
  created.forEach((i) => shaped(i, 'invitation'));
  equal(emailsOf(created), sorted([jan, kit]), 'their addresses');
  equal(created.map((i) => i.status), ['pending', 'pending'], 'statuses');
  state.bulkInvitations = ids(created);
  return { ids: state.bulkInvitations };
});

await step('invitations.getInvitationList({ status: pending })', ['invitation', 'bulkInvitations'], async () => {
  const list = page(await clerk.invitations.getInvitationList({ status: 'pending', limit: 100 }), 'getInvitationList');
  list.data.forEach((i) => shaped(i, 'invitation'));
  const mine = list.data.filter((i) => [ivy, jan, kit].includes(i.emailAddress));
  equal(emailsOf(mine), sorted([ivy, jan, kit]), 'the pending invitations of this run');
  check(list.data.every((i) => i.status === 'pending'), 'only pending ones', list.data.map((i) => i.status));
  check(list.totalCount >= 3, 'totalCount', list.totalCount);
  return { totalCount: list.totalCount };
});

await step('invitations.revokeInvitation', ['invitation'], async () => {
  const revoked = shaped(await clerk.invitations.revokeInvitation(state.invitation), 'invitation');
  equal(revoked.id, state.invitation, 'id');
  equal(revoked.status, 'revoked', 'status');
  equal(revoked.revoked, true, 'revoked');
  const list = page(await clerk.invitations.getInvitationList({ status: 'revoked' }), 'getInvitationList revoked');
  check(ids(list.data).includes(state.invitation), 'listed as revoked', ids(list.data));
  const pending = page(await clerk.invitations.getInvitationList({ status: 'pending' }), 'getInvitationList pending');
  check(!ids(pending.data).includes(state.invitation), 'no longer pending', ids(pending.data));
  return { id: revoked.id };
});

await refusal(
  'invitations.createInvitation refused: a pending one exists',
  ['bulkInvitations'],
  () => clerk.invitations.createInvitation({ emailAddress: jan, notify: false }),
  400,
  ['duplicate_record'],
);

// ---------------------------------------------------------------------------
// Organizations

const acmeSlug = `acme-${tag}`;
const globexSlug = `globex-${tag}`;

await step('organizations.createOrganization', [], async () => {
  const acme = shaped(
    await clerk.organizations.createOrganization({
      name: `Acme ${tag}`,
      slug: acmeSlug,
      maxAllowedMemberships: 5,
      publicMetadata: { tier: 'gold' },
      privateMetadata: { crm: 'A-1' },
    }),
    'organization',
  );
  check(/^org_/.test(acme.id), 'an org_ id', acme.id);
  equal(acme.slug, acmeSlug, 'slug');
  equal(acme.name, `Acme ${tag}`, 'name');
  equal(acme.maxAllowedMemberships, 5, 'maxAllowedMemberships');
  equal(acme.publicMetadata, { tier: 'gold' }, 'publicMetadata');
  equal(acme.privateMetadata, { crm: 'A-1' }, 'privateMetadata');
  const globex = shaped(
    await clerk.organizations.createOrganization({ name: `Globex ${tag}`, slug: globexSlug }),
    'organization',
  );
  equal(globex.slug, globexSlug, 'second slug');
  state.acme = acme.id;
  state.globex = globex.id;
  return { acme: acme.id, globex: globex.id };
});

await step('organizations.getOrganization({ organizationId })', ['acme'], async () => {
  const org = shaped(await clerk.organizations.getOrganization({ organizationId: state.acme }), 'organization');
  equal(org.id, state.acme, 'id');
  equal(org.slug, acmeSlug, 'slug');
  equal(org.maxAllowedMemberships, 5, 'maxAllowedMemberships');
  equal(org.privateMetadata, { crm: 'A-1' }, 'privateMetadata');
  return { id: org.id };
});

await step('organizations.getOrganization({ slug })', ['acme'], async () => {
  const org = shaped(await clerk.organizations.getOrganization({ slug: acmeSlug }), 'organization');
  equal(org.id, state.acme, 'id');
  return { id: org.id };
});

await refusal(
  'organizations.getOrganization refused: unknown slug',
  [],
  () => clerk.organizations.getOrganization({ slug: `nowhere-${tag}` }),
  404,
  ['resource_not_found'],
);

await step('organizations.getOrganizationList', ['acme', 'globex'], async () => {
  const all = page(await clerk.organizations.getOrganizationList({ limit: 100 }), 'getOrganizationList');
  all.data.forEach((o) => shaped(o, 'organization'));
  check([state.acme, state.globex].every((id) => ids(all.data).includes(id)), 'both organizations listed', ids(all.data));
  check(all.totalCount >= 2, 'totalCount', all.totalCount);
  const found = page(await clerk.organizations.getOrganizationList({ query: globexSlug }), 'getOrganizationList query');
  equal(ids(found.data), [state.globex], 'the organization a query finds');
  equal(found.totalCount, 1, 'totalCount of the query');
  const first = page(await clerk.organizations.getOrganizationList({ limit: 1 }), 'getOrganizationList limit 1');
  equal(first.data.length, 1, 'a page of 1');
  equal(first.totalCount, all.totalCount, 'totalCount counts every organization, not the page');
  return { totalCount: all.totalCount };
});

await step('a 429 read through the SDK: Retry-After as retryAfter', ['acme'], async () => {
  // The next organization listing is answered as Clerk's rate limit would answer it.
  await control('POST', '/faults', {
    operation: 'list_organizations',
    times: 1,
    kind: { type: 'status', status: 429, retry_after: 7 },
  });
  const error = await refused(() => clerk.organizations.getOrganizationList());
  equal(error.status, 429, 'status');
  equal(error.errors[0]?.code, 'too_many_requests', 'errors[0].code');
  equal(error.retryAfter, 7, 'retryAfter (seconds, from Retry-After)');
  const after = page(await clerk.organizations.getOrganizationList(), 'getOrganizationList after the 429');
  check(ids(after.data).includes(state.acme), 'the next listing is answered', ids(after.data));
  return { status: error.status, retryAfter: error.retryAfter };
});

// ---------------------------------------------------------------------------
// Organization invitations (Acme takes at most 5 members and pending invitations)

const olga = address('olga');
const otto = address('otto');
const opal = address('opal');
const pia = address('pia');
const quin = address('quin');
const rex = address('rex');

await step('organizations.createOrganizationInvitation', ['acme'], async () => {
  const invitation = shaped(
    await clerk.organizations.createOrganizationInvitation({
      organizationId: state.acme,
      emailAddress: olga,
      role: 'org:member',
      publicMetadata: { seat: 7 },
      privateMetadata: { source: 'hr' },
      redirectUrl: 'https://app.example.com/join',
      expiresInDays: 14,
    }),
    'organization_invitation',
  );
  check(/^orginv_/.test(invitation.id), 'an orginv_ id', invitation.id);
  equal(invitation.emailAddress, olga, 'emailAddress');
  equal(invitation.role, 'org:member', 'role');
  equal(invitation.organizationId, state.acme, 'organizationId');
  equal(invitation.status, 'pending', 'status');
  equal(invitation.publicMetadata, { seat: 7 }, 'publicMetadata');
  equal(invitation.privateMetadata, { source: 'hr' }, 'privateMetadata');
  state.orgInvitation = invitation.id;
  return { id: invitation.id };
});

await step('organizations.createOrganizationInvitation to an existing account', ['acme', 'users'], async () => {
  // Unlike an instance invitation, an organization invitation may go to an address with an account.
  const invitation = shaped(
    await clerk.organizations.createOrganizationInvitation({
      organizationId: state.acme,
      emailAddress: cyd,
      role: 'org:member',
      publicMetadata: { desk: 'B2' },
    }),
    'organization_invitation',
  );
  equal(invitation.emailAddress, cyd, 'emailAddress');
  equal(invitation.status, 'pending', 'status');
  state.existingAccountInvitation = invitation.id;
  return { id: invitation.id };
});

await step('organizations.createOrganizationInvitationBulk', ['acme'], async () => {
  const result = await clerk.organizations.createOrganizationInvitationBulk(state.acme, [
    { emailAddress: otto, role: 'org:admin' },
    { emailAddress: opal, role: 'org:member', publicMetadata: { seat: 9 } },
  ]);
  // The spec answers {data, total_count}; the SDK passes it on as {data, totalCount}.
  const created = page(result, 'createOrganizationInvitationBulk');
  created.data.forEach((i) => shaped(i, 'organization_invitation'));
  equal(emailsOf(created.data), sorted([otto, opal]), 'their addresses');
  const roles = Object.fromEntries(created.data.map((i) => [i.emailAddress, i.role]));
  equal(roles, { [otto]: 'org:admin', [opal]: 'org:member' }, 'roles');
  check(created.data.every((i) => i.status === 'pending' && i.organizationId === state.acme), 'pending in Acme', created.data);
  equal(created.totalCount, 2, 'totalCount');
  state.bulkOrgInvitations = ids(created.data);
  return { ids: state.bulkOrgInvitations };
});

await step(
  'organizations.getOrganizationInvitationList({ status: [pending] })',
  ['orgInvitation', 'existingAccountInvitation', 'bulkOrgInvitations'],
  async () => {
    const list = page(
      await clerk.organizations.getOrganizationInvitationList({ organizationId: state.acme, status: ['pending'] }),
      'getOrganizationInvitationList',
    );
    list.data.forEach((i) => shaped(i, 'organization_invitation'));
    equal(emailsOf(list.data), sorted([olga, cyd, otto, opal]), 'the pending invitations');
    equal(list.totalCount, 4, 'totalCount');
    const paged = page(
      await clerk.organizations.getOrganizationInvitationList({ organizationId: state.acme, limit: 1, offset: 1 }),
      'getOrganizationInvitationList limit 1 offset 1',
    );
    equal(paged.data.length, 1, 'a page of 1');
    equal(paged.totalCount, 4, 'totalCount counts every invitation, not the page');
    return { totalCount: list.totalCount };
  },
);

await step('organizations.getOrganizationInvitation', ['orgInvitation'], async () => {
  const invitation = shaped(
    await clerk.organizations.getOrganizationInvitation({ organizationId: state.acme, invitationId: state.orgInvitation }),
    'organization_invitation',
  );
  equal(invitation.id, state.orgInvitation, 'id');
  equal(invitation.emailAddress, olga, 'emailAddress');
  equal(invitation.role, 'org:member', 'role');
  equal(invitation.privateMetadata, { source: 'hr' }, 'privateMetadata');
  return { id: invitation.id };
});

await step('organizations.revokeOrganizationInvitation', ['orgInvitation', 'bulkOrgInvitations'], async () => {
  const revoked = shaped(
    await clerk.organizations.revokeOrganizationInvitation({ organizationId: state.acme, invitationId: state.orgInvitation }),
    'organization_invitation',
  );
  equal(revoked.id, state.orgInvitation, 'id');
  equal(revoked.status, 'revoked', 'status');
  const gone = page(
    await clerk.organizations.getOrganizationInvitationList({ organizationId: state.acme, status: ['revoked'] }),
    'getOrganizationInvitationList revoked',
  );
  equal(ids(gone.data), [state.orgInvitation], 'the revoked invitations');
  const pending = page(
    await clerk.organizations.getOrganizationInvitationList({ organizationId: state.acme, status: ['pending'] }),
    'getOrganizationInvitationList pending',
  );
  equal(emailsOf(pending.data), sorted([cyd, otto, opal]), 'the pending invitations left');
  state.revokedOrgInvitation = revoked.id;
  return { id: revoked.id };
});

await refusal(
  'organizations.revokeOrganizationInvitation refused: not pending',
  ['revokedOrgInvitation'],
  () => clerk.organizations.revokeOrganizationInvitation({ organizationId: state.acme, invitationId: state.orgInvitation }),
  404,
  ['organization_invitation_not_pending'],
);

await refusal(
  'organizations.createOrganizationInvitation refused: a pending one exists',
  ['bulkOrgInvitations'],
  () => clerk.organizations.createOrganizationInvitation({ organizationId: state.acme, emailAddress: otto, role: 'org:member' }),
  400,
  ['duplicate_record', 'organization_invitation_not_unique'],
);

await refusal(
  'organizations.createOrganizationInvitation refused: unknown role',
  ['acme'],
  () => clerk.organizations.createOrganizationInvitation({ organizationId: state.acme, emailAddress: rex, role: 'org:nosuchrole' }),
  404,
  ['resource_not_found'],
);

await step('organization invitation accepted (control API), seen through the SDK', ['existingAccountInvitation'], async () => {
  await control('POST', `/organization_invitations/${state.existingAccountInvitation}/accept`);
  const accepted = shaped(
    await clerk.organizations.getOrganizationInvitation({
      organizationId: state.acme,
      invitationId: state.existingAccountInvitation,
    }),
    'organization_invitation',
  );
  equal(accepted.status, 'accepted', 'status');
  const listed = page(
    await clerk.organizations.getOrganizationInvitationList({ organizationId: state.acme, status: ['accepted'] }),
    'getOrganizationInvitationList accepted',
  );
  equal(ids(listed.data), [state.existingAccountInvitation], 'the accepted invitations');
  const members = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.acme }),
    'getOrganizationMembershipList of Acme',
  );
  members.data.forEach((m) => shaped(m, 'organization_membership'));
  equal(members.data.map((m) => m.publicUserData.userId), [state.users[cyd]], 'the member the acceptance made');
  equal(members.data[0].role, 'org:member', "the invitation's role");
  equal(members.data[0].publicMetadata, { desk: 'B2' }, "the invitation's public metadata");
  return { member: state.users[cyd] };
});

await step('organizations.getOrganization({ includeMembersCount })', ['acme'], async () => {
  const org = shaped(
    await clerk.organizations.getOrganization({ organizationId: state.acme, includeMembersCount: true }),
    'organization',
  );
  equal(org.membersCount, 1, 'membersCount');
  equal(org.raw.pending_invitations_count, 2, 'pending_invitations_count');
  return { membersCount: org.membersCount };
});

await step('organizations.createOrganizationInvitationBulk up to the limit', ['acme'], async () => {
  // One member and two pending invitations: two more fill the five places.
  const created = page(
    await clerk.organizations.createOrganizationInvitationBulk(state.acme, [
      { emailAddress: pia, role: 'org:member' },
      { emailAddress: quin, role: 'org:member' },
    ]),
    'createOrganizationInvitationBulk',
  );
  equal(emailsOf(created.data), sorted([pia, quin]), 'their addresses');
  state.acmeFull = true;
  return { ids: ids(created.data) };
});

await refusal(
  'organizations.createOrganizationInvitation refused: the organization is full',
  ['acmeFull'],
  () => clerk.organizations.createOrganizationInvitation({ organizationId: state.acme, emailAddress: rex, role: 'org:member' }),
  403,
  ['organization_membership_quota_exceeded'],
);

// ---------------------------------------------------------------------------
// Memberships (Globex)

await step('organizations.createOrganizationMembership', ['globex', 'users'], async () => {
  const admin = shaped(
    await clerk.organizations.createOrganizationMembership({
      organizationId: state.globex,
      userId: state.users[ada],
      role: 'org:admin',
    }),
    'organization_membership',
  );
  equal(admin.role, 'org:admin', 'role');
  equal(admin.organization.id, state.globex, 'organization.id');
  equal(admin.publicUserData.userId, state.users[ada], 'publicUserData.userId');
  equal(admin.publicUserData.identifier, ada, 'publicUserData.identifier');
  const member = shaped(
    await clerk.organizations.createOrganizationMembership({
      organizationId: state.globex,
      userId: state.users[bob],
      role: 'org:member',
    }),
    'organization_membership',
  );
  equal(member.role, 'org:member', 'second role');
  state.memberships = [admin.id, member.id];
  return { ids: state.memberships };
});

await step('organizations.getOrganizationMembershipList', ['memberships'], async () => {
  const all = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex }),
    'getOrganizationMembershipList',
  );
  all.data.forEach((m) => shaped(m, 'organization_membership'));
  equal(sorted(all.data.map((m) => m.publicUserData.userId)), sorted([state.users[ada], state.users[bob]]), 'members');
  equal(all.totalCount, 2, 'totalCount');
  const byEmail = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, emailAddress: [bob] }),
    'getOrganizationMembershipList emailAddress',
  );
  equal(byEmail.data.map((m) => m.publicUserData.userId), [state.users[bob]], 'filtered by emailAddress');
  const byUser = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, userId: [state.users[ada]] }),
    'getOrganizationMembershipList userId',
  );
  equal(byUser.data.map((m) => m.role), ['org:admin'], 'filtered by userId');
  const byRole = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, role: ['org:member'] }),
    'getOrganizationMembershipList role',
  );
  equal(byRole.data.map((m) => m.publicUserData.userId), [state.users[bob]], 'filtered by role');
  const paged = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, limit: 1, offset: 1 }),
    'getOrganizationMembershipList limit 1 offset 1',
  );
  equal(paged.data.length, 1, 'a page of 1');
  equal(paged.totalCount, 2, 'totalCount counts every member, not the page');
  const counted = await clerk.organizations.getOrganization({ organizationId: state.globex, includeMembersCount: true });
  equal(counted.membersCount, 2, 'membersCount with includeMembersCount');
  return { totalCount: all.totalCount };
});

await refusal(
  'organizations.createOrganizationMembership refused: already a member',
  ['memberships'],
  () => clerk.organizations.createOrganizationMembership({ organizationId: state.globex, userId: state.users[ada], role: 'org:member' }),
  400,
  ['already_a_member_in_organization'],
);

await refusal(
  'organizations.createOrganizationMembership refused: unknown user',
  ['globex'],
  () => clerk.organizations.createOrganizationMembership({ organizationId: state.globex, userId: 'user_doesnotexist000000000000', role: 'org:member' }),
  404,
  ['resource_not_found'],
);

await step('organizations.updateOrganizationMembership', ['memberships'], async () => {
  const updated = shaped(
    await clerk.organizations.updateOrganizationMembership({
      organizationId: state.globex,
      userId: state.users[bob],
      role: 'org:admin',
    }),
    'organization_membership',
  );
  equal(updated.role, 'org:admin', 'role');
  equal(updated.publicUserData.userId, state.users[bob], 'publicUserData.userId');
  const admins = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, role: ['org:admin'] }),
    'getOrganizationMembershipList admins',
  );
  equal(admins.totalCount, 2, 'admins after the change');
  return { role: updated.role };
});

await step('organizations.deleteOrganizationMembership', ['memberships'], async () => {
  const deleted = shaped(
    await clerk.organizations.deleteOrganizationMembership({ organizationId: state.globex, userId: state.users[bob] }),
    'organization_membership',
  );
  equal(deleted.publicUserData.userId, state.users[bob], 'the membership deleted');
  const left = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex }),
    'getOrganizationMembershipList after delete',
  );
  equal(left.data.map((m) => m.publicUserData.userId), [state.users[ada]], 'members left');
  equal(left.totalCount, 1, 'totalCount');
  state.deleted = deleted.id;
  return { id: deleted.id };
});

await refusal(
  'organizations.updateOrganizationMembership refused: the last admin',
  ['deleted'],
  () => clerk.organizations.updateOrganizationMembership({ organizationId: state.globex, userId: state.users[ada], role: 'org:member' }),
  400,
  ['organization_minimum_permissions_needed'],
);

await step('a Directory Sync membership (control API), seen through the SDK', ['globex', 'users'], async () => {
  await control('POST', `/organizations/${state.globex}/memberships`, {
    user_id: state.users[cyd],
    role: 'org:member',
    scim: true,
  });
  const listed = page(
    await clerk.organizations.getOrganizationMembershipList({ organizationId: state.globex, userId: [state.users[cyd]] }),
    'getOrganizationMembershipList of the Directory Sync member',
  );
  equal(listed.data.map((m) => m.role), ['org:member'], 'its role');
  state.scimMember = state.users[cyd];
  return { member: state.scimMember };
});

await refusal(
  'organizations.deleteOrganizationMembership refused: managed by Directory Sync',
  ['scimMember'],
  () => clerk.organizations.deleteOrganizationMembership({ organizationId: state.globex, userId: state.scimMember }),
  409,
  ['organization_membership_managed_by_scim'],
);

// ---------------------------------------------------------------------------
// The webhooks those calls raised

if (webhookServer) {
  await step('webhooks.verifyWebhook accepts every event', ['users', 'acme', 'globex', 'deleted'], async () => {
    const expected = [
      'user.created',
      'organizationInvitation.created',
      'organizationInvitation.revoked',
      'organizationInvitation.accepted',
      'organizationMembership.created',
      'organizationMembership.updated',
      'organizationMembership.deleted',
    ];
    // Every call is answered, so the simulator has raised every event it will raise.
    const raised = (await control('GET', '/stats')).webhooks?.raised ?? 0;
    const verified = () => deliveries.filter((d) => d.ok);
    const seen = () => new Set(verified().map((d) => d.type));
    const arrived = await waitFor(() => verified().length >= raised, 15000);
    check(arrived, `all ${raised} events within 15 s`, verified().length);
    const missing = expected.filter((type) => !seen().has(type));
    check(missing.length === 0, `every event type; missing ${missing.join(', ')}`);
    const refused = deliveries.filter((d) => !d.ok);
    check(refused.length === 0, 'every delivery verifies', refused);
    const of = (type) => deliveries.filter((d) => d.type === type).map((d) => d.data);
    const accepted = of('organizationInvitation.accepted');
    equal(accepted.map((d) => d.id), [state.existingAccountInvitation], 'the accepted invitation');
    equal(accepted[0].user_id, state.users[cyd], 'the accepted event carries user_id');
    const revoked = of('organizationInvitation.revoked').map((d) => d.id);
    check(revoked.includes(state.revokedOrgInvitation), 'the revoked invitation', revoked);
    const deleted = of('organizationMembership.deleted').map((d) => d.public_user_data?.user_id);
    equal(deleted, [state.users[bob]], 'the deleted membership');
    const updated = of('organizationMembership.updated').map((d) => [d.public_user_data?.user_id, d.role]);
    equal(updated, [[state.users[bob], 'org:admin']], 'the role change');
    return Object.fromEntries(expected.map((type) => [type, of(type).length]));
  });
  // Close once every answer went out (idle keep-alive connections are closed at once).
  const closed = new Promise((resolve) => webhookServer.close(resolve));
  if (!(await Promise.race([closed.then(() => true), new Promise((r) => setTimeout(() => r(false), 5000))]))) {
    webhookServer.closeAllConnections();
  }
}

// ---------------------------------------------------------------------------

const failed = steps.filter((s) => !s.ok).length;
console.log(
  JSON.stringify({
    sdk: `@clerk/backend@${sdkVersion}`,
    node: process.version,
    tag,
    steps,
    passed: steps.length - failed,
    failed,
  }),
);
process.exit(failed === 0 ? 0 : 1);
