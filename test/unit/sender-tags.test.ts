// --normalise-senders: each rule with real-looking addresses, and what it must leave alone.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { stripSenderTags } from '../../src/sender-tags.js';

const same = (a: string, b: string) => assert.equal(stripSenderTags(a), stripSenderTags(b), `${a} and ${b} should be one sender`);
const differ = (a: string, b: string) => assert.notEqual(stripSenderTags(a), stripSenderTags(b), `${a} and ${b} should stay apart`);

describe('stripSenderTags', () => {
  it('BATV: prvs=, msprvs1= and btv1== tags are removed', () => {
    assert.equal(stripSenderTags('prvs=0123abcdef=jane@example.com'), 'jane@example.com');
    assert.equal(stripSenderTags('PRVS=4567ABCDEF=Jane@Example.com'), 'Jane@Example.com');
    assert.equal(stripSenderTags('msprvs1=19876abcdEFgh=bounces-ops@sharepointonline.example'), 'bounces-ops@sharepointonline.example');
    assert.equal(stripSenderTags('btv1==0a1b2c3d4e5==jane@example.com'), 'jane@example.com');
    same('prvs=1111aaaaaa=jane@example.com', 'prvs=2222bbbbbb=jane@example.com');
  });

  it('SRS0 and SRS1 give back the original address', () => {
    assert.equal(stripSenderTags('SRS0=HHH=TT=origin.example=alice@forwarder.example'), 'alice@origin.example');
    assert.equal(stripSenderTags('SRS0=Zy3q=NW=origin.example=alice@forwarder.example'), 'alice@origin.example');
    assert.equal(stripSenderTags('SRS0+xY7a=2T=origin.example=alice@forwarder.example'), 'alice@origin.example');
    assert.equal(stripSenderTags('SRS1=Ab9c=first.example==Zy3q=NW=origin.example=alice@second.example'), 'alice@origin.example');
    same('SRS0=aaaa=NW=origin.example=alice@fwd.example', 'SRS0=bbbb=NX=origin.example=alice@fwd.example');
    // an SRS address that also carries BATV for the original sender
    assert.equal(stripSenderTags('SRS0=aaaa=NW=origin.example=prvs=0123abcdef=alice@fwd.example'), 'alice@origin.example');
  });

  it('+extension is removed; a qmail -extension is kept', () => {
    assert.equal(stripSenderTags('bob+newsletter-42@example.org'), 'bob@example.org');
    same('bob+a@example.org', 'bob+b@example.org');
    differ('john-smith@example.org', 'john-doe@example.org');
  });

  it('numeric and hex per-message VERP tokens in the local part become #', () => {
    same('bounce-1234-5678@lists.example', 'bounce-4321-8765@lists.example');
    assert.equal(stripSenderTags('bounce-1234-5678@lists.example'), 'bounce-#-#@lists.example');
    same('nl-a1b2c3d4e5@mailer.example', 'nl-f6e5d4c3b2@mailer.example');
    // a Mailchimp-style return path: campaign and subscriber ids change per message
    same(
      'bounce-mc.us5_12345678.1234567-jane=example.org@mail123.mcsv.example',
      'bounce-mc.us5_87654321.7654321-jane=example.org@mail123.mcsv.example',
    );
    // an Amazon SES-style return path
    same(
      '0100018c1a2b3c4d-5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9-000000@amazonses.example',
      '0100018c9f8e7d6c-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d-000000@amazonses.example',
    );
  });

  it('leaves ordinary addresses, short tokens, words and domains alone', () => {
    for (const a of ['jane@example.com', 'us5-info@example.com', 'user2024@example.com', 'deadbeef@example.com', 'x@mail123.example', '', '.', 'no-at-sign']) {
      assert.equal(stripSenderTags(a), a);
    }
    differ('alice@a.example', 'alice@b.example');
    differ('bounce-1234@lists.example', 'bounce-1234@other.example');
  });
});
