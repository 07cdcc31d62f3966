"""Round-4 to round-9 invariants of the signals, on texts written for these tests (none is in a labelled split)."""

from __future__ import annotations

from policyengine.signals.alignment import identifier_conflict, identifiers
from policyengine.signals.checks import extract_facts, span_conflicts
from policyengine.signals.conditions import (
    condition_conflicts,
    count_conflicts,
    price_conflicts,
)
from policyengine.signals.formats import canonical
from policyengine.signals.intent import not_a_dispute
from policyengine.signals.negation import action_conflicts, parity
from policyengine.signals.sentiment import _shouting, outbound_cue

# -- divergence: conditions, counts, prices, day bases ------------------------------------


def _spans(a: str, b: str) -> list[str]:
    """The kinds of span conflict `checks` finds between two answers."""
    return [c.kind for c in span_conflicts(extract_facts(canonical(a)), extract_facts(canonical(b)))]


def test_an_added_restriction_is_a_condition_conflict():
    assert condition_conflicts("Parking is free for guests.", "Parking is free for guests at weekends only.")
    assert condition_conflicts("You can switch tariff at any time.",
                               "You can switch tariff at any time, as long as you have no arrears.")
    assert condition_conflicts("Delivery is free.", "Delivery is free unless you live in the Highlands.")


def test_detail_and_formulaic_conditions_are_not_conditions():
    assert not condition_conflicts("Your refund is on its way.",
                                   "Your refund is on its way. Let us know if you have any questions.")
    assert not condition_conflicts("The engineer visit is booked.",
                                   "The engineer visit is booked for you, and she will bring the new hub.")
    # a contingency about something else is not a restriction of what was said
    assert not condition_conflicts("I've replaced your SIM.",
                                   "I've replaced your SIM. If the signal is still weak tomorrow, reply here.")


def test_counts_in_words_are_compared():
    assert count_conflicts("We'll send two spare keys.", "We'll send three spare keys.")
    assert count_conflicts("The plan covers up to 5 devices.", "The plan is for a single device.")
    assert not count_conflicts("We'll send two spare keys.", "We will post 2 spare keys to you.")
    assert not count_conflicts("One moment please.", "Two moments please.")  # not a counted thing


def test_free_against_a_price_is_a_price_conflict():
    assert price_conflicts("Wi-Fi is included in your room rate.", "Wi-Fi is available for an extra £8 a night.")
    assert not price_conflicts("Wi-Fi is included in your room rate.", "Your room rate includes Wi-Fi at no cost.")
    assert not price_conflicts("Wi-Fi is not included.", "Wi-Fi costs £8 a night.")


def test_working_days_against_calendar_days():
    assert _spans("It arrives within 3 working days.", "It arrives within 3 days.") == ["day_basis"]
    assert not _spans("It arrives within 3 working days.", "It arrives within three business days.")


def test_formats_that_name_the_same_value_are_canonical():
    assert identifiers(canonical("Ring 1-888-555-0199.")) == identifiers(canonical("Ring (888) 555-0199."))
    assert canonical("Send it to 12 Oak St., Ste. 4.") == canonical("Send it to 12 Oak Street, Suite 4.")
    assert canonical("You have 500 gigabytes left.") == canonical("You have 500 GB left.")
    assert canonical("Total: €19,99.") == "Total: €19.99."


def test_an_account_number_with_a_check_digit_is_an_identifier():
    assert identifier_conflict("Quote account 5521-7 when you pay.", "Quote account 5512-7 when you pay.")


def test_negating_verbs_and_fee_removal_keep_parity():
    assert parity("We had to decline your application.") == parity("Application declined.")
    assert parity("We've cancelled the delivery charge.") == parity("The delivery charge is waived.")
    assert parity("There's nothing outstanding on the account.") == parity("The account is up to date.")
    assert parity("Please clear the outstanding balance by Friday.") == parity("Please pay the balance by Friday.")


def test_refund_against_voucher_and_transfer_against_cheque_are_opposite_actions():
    assert action_conflicts("We'll refund the deposit to your original card.", "We'll give you a voucher for the deposit.")
    assert action_conflicts("Your payout will go by bank transfer.", "Your payout will arrive by cheque in the post.")


# -- litigation intent: what is not a dispute ---------------------------------------------


def _starts(sentence: str, *words: str) -> list[int]:
    return [sentence.index(w) for w in words]


def test_dropped_or_imagined_legal_action_is_not_a_dispute():
    s = "I was about to call a solicitor, but you've sorted it. No need now."
    assert not_a_dispute(s, _starts(s, "solicitor"))
    s = "My dad thinks I should get a lawyer, which seems over the top for a late parcel."
    assert not_a_dispute(s, _starts(s, "lawyer"))


def test_court_in_another_sense_and_a_named_role_are_not_a_dispute():
    s = "Do you sell the grass court shoes in a size 9?"
    assert not_a_dispute(s, _starts(s, "court"))
    s = "I'm a trainee solicitor and need a bank reference for a new flat."
    assert not_a_dispute(s, _starts(s, "solicitor"))


def test_a_relative_acting_against_the_recipient_is_still_a_dispute():
    s = "My daughter is a lawyer and she will be writing to you about this bill."
    assert not not_a_dispute(s, _starts(s, "lawyer"))
    s = "We have instructed a firm about the mould, and you'll be hearing from them."
    assert not not_a_dispute(s, _starts(s, "a firm"))


# -- sentiment: outbound apologies, relief, shouting ---------------------------------------


def test_an_apology_followed_by_what_was_done_reads_as_outbound():
    assert outbound_cue("I'm so sorry about the leak. I've authorised a plumber for tomorrow morning.")
    assert outbound_cue("Dear Mr. Okafor, thank you for your patience.")
    assert not outbound_cue("I'm sorry but this is the third time I've had to chase you.")


def test_codes_are_not_shouting():
    assert not _shouting("Your claim RK-20931 was filed with the AAA and JAMS.")
    assert _shouting("WHERE IS MY REFUND, I WANT IT NOW")


def test_outbound_apologies_and_relief_are_not_negative(provider):
    assert provider.sentiment("I'm really sorry the engineer missed you. I've booked a new visit for Friday "
                              "and credited your account £20.") >= 0.3
    assert provider.sentiment("Phew, the payment finally went through. I was so worried. Thank you!") >= 0.3
    assert provider.sentiment("I'm sorry but this is the fourth time I've had to chase a refund.") < 0.3


# -- round 5 ------------------------------------------------------------------------------


def test_european_money_and_grouped_ibans_are_canonical():
    assert canonical("We've refunded 1.450,00 EUR.") == "We've refunded 1450.00 EUR."
    assert canonical("A claim of €2.400 was approved.") == "A claim of €2400 was approved."
    assert canonical("Pay IBAN DE89 3704 0044 0532 0130 00.") == "Pay IBAN DE89370400440532013000."


def test_relative_periods_durations_and_repeated_amounts_are_compared():
    from policyengine.signals.conditions import (
        amount_count_conflicts,
        relative_date_conflicts,
    )

    assert relative_date_conflicts("The new price starts next month.", "The new price starts the month after next.")
    assert not relative_date_conflicts("The new price starts next month.", "From next month the price changes.")
    assert _spans("The link works for 2 days.", "The link works for 24 hours.") == ["duration"]
    assert not _spans("The link works for 2 days.", "The link works for 48 hours.")
    assert amount_count_conflicts("Of the £80 charge, I've refunded half, £40.", "Of the £80 charge, I've refunded all £80.")
    assert not amount_count_conflicts("We've refunded £80. The £80 shows tomorrow.", "We've refunded £80.")


def test_a_free_offer_that_is_priced_later_is_a_price_conflict():
    assert price_conflicts("The add-on is free.", "The add-on is free for three months, then £4 a month.")
    assert price_conflicts("Your account is on hold while we review the complaint; no payment is due.",
                           "Your account is on hold while we review the complaint; please keep paying £30 a month.")


def test_a_condition_both_answers_state_is_not_a_conflict():
    assert not condition_conflicts("Bags under 10kg can go in the cabin.", "Bags can go in the cabin if they are under 10kg.")
    assert condition_conflicts("We've approved your claim.", "We've approved your claim once the invoice arrives.")


def test_a_stated_dispute_outweighs_a_named_role():
    s = "I'm a paralegal and what you did breached the contract."
    assert not not_a_dispute(s, _starts(s, "paralegal"))
    s = "My brother is a solicitor and he's writing to u this week."
    assert not not_a_dispute(s, _starts(s, "solicitor"))


def test_outbound_notices_and_outright_thanks(provider):
    assert outbound_cue("We have not been able to collect your payment of £20 this month.")
    assert outbound_cue("Dear passenger, we regret to inform you that the 09:10 is cancelled.")
    assert provider.sentiment("Wanted to pass on my thanks to the night team. The car broke down at 3am and "
                              "they had us home within the hour.") >= 0.3
    assert provider.sentiment("I would be most grateful if, on this sixth attempt, someone read my email.") < 0.3


# -- round 6 ------------------------------------------------------------------------------


def test_round6_ranges_months_weekdays_codes_and_counts():
    from policyengine.signals.checks import compare_facts, extract_facts
    from policyengine.signals.conditions import month_conflicts

    assert _spans("It arrives within 3 working days.", "It arrives within 3 to 5 working days.") == ["range"]
    assert not _spans("It arrives within 3 to 5 working days.", "It arrives in 3-5 working days.")
    assert month_conflicts("Your next reading is due in June.", "Your next reading is due in August.")
    assert not month_conflicts("Your next reading is due in June.", "Expect the reading request in June.")
    assert not _spans("Claim within 30 days.", "Claim within a month.")  # the same span
    assert _spans("Allow 10 working days.", "Allow three working weeks.") == ["duration"]
    fa = extract_facts("The lane is shut from 8pm Friday to 5am Monday.")
    fb = extract_facts("The lane is shut from 8pm Friday to 5am Tuesday.")
    assert any(c.kind == "dates" for c in compare_facts(fa, fb))
    assert canonical("Your code is 4KX 219 730.") == "Your code is 4KX219730."
    assert count_conflicts("A table for 2 adults and 1 child.", "A table for 2 adults and 3 children.")
    assert count_conflicts("Pay in 6 monthly instalments.", "Pay in 10 monthly instalments.")


def test_round6_litigation_gate_and_not_a_dispute():
    s = "I haven't decided whether to take this further legally; please just look again."
    assert not_a_dispute(s, _starts(s, "legally"))
    s = "Our family has joined the class action over the fees, and the firm will write to you."
    assert not not_a_dispute(s, _starts(s, "class action"))


# -- round 7 ------------------------------------------------------------------------------


def test_round7_legal_words_in_another_sense_are_not_a_dispute():
    s = "Storm damage to the roof of the flat: which form do I send to you?"
    assert not_a_dispute(s, _starts(s, "damage"))
    s = "I wrote to the Attorney General of my state about your renewal emails."
    assert not_a_dispute(s, _starts(s, "Attorney"))
    s = "We're dealing with a lawsuit from a supplier (an unrelated matter) and need our invoices exported."
    assert not_a_dispute(s, _starts(s, "lawsuit"))
    s = "I thought about small claims, then decided it was not worth the hassle for a kettle."
    assert not_a_dispute(s, _starts(s, "small claims"))
    s = "There's a class action against another airline over lost bags; am I covered by anything like it?"
    assert not_a_dispute(s, _starts(s, "class action"))
    # damages claimed, and damage a claim is about, stay a dispute
    s = "I will be claiming damages from you for the ruined carpet."
    assert not not_a_dispute(s, _starts(s, "damages"))


def test_round7_a_context_of_another_matter_covers_every_sentence(embedder):
    from policyengine.signals.intent import IntentModel

    intent_model = IntentModel(embedder=embedder)
    assert intent_model.probability("Your remortgage has been approved. Your solicitor will get the papers on Monday.") < 0.3
    assert intent_model.probability("Unless the deposit is back by Friday I will issue a counterclaim.") >= 0.3
    assert intent_model.probability("I've spoken to a no win no fee firm about the mis-sold loan and they will write to you.") >= 0.3


def test_round7_outbound_formulas_and_a_claimants_letter():
    assert outbound_cue("Your card ending 0091 has been blocked for your safety; call us to unblock it.")
    assert outbound_cue("We write without admission of liability to offer £150 in full settlement.")
    assert outbound_cue("Sorry - the reminder was sent to you in error. Please disregard that reminder.")
    assert not outbound_cue("My card ending 0091 was blocked again and nobody can tell me why.")
    from policyengine.signals.sentiment import _CLAIMANT_SIDE
    assert _CLAIMANT_SIDE.search("Please find enclosed our letter on behalf of our client regarding the unpaid invoice.")


def test_round7_complaint_cues(provider):
    assert provider.sentiment("After five calls the meter still isn't fixed. If it fails again I'm switching suppliers.") < 0.3


def test_round7_the_same_figure_per_different_things_is_a_basis_conflict():
    from policyengine.signals.conditions import basis_conflicts

    assert basis_conflicts(canonical("Storage is $4.99 a month."), canonical("Storage is $4.99 per year."))
    assert basis_conflicts("The fee is €25 per adult.", "The fee is €25 for each booking.")
    assert basis_conflicts("Uploads are limited to 500 files per hour.", "Uploads are limited to 500 files daily.")
    # the same basis in other words, a basis added, or one basis within the other: no conflict
    assert not basis_conflicts("It's £12 monthly.", "It's £12 per month.")
    assert not basis_conflicts("Parking is £8.", "Parking is £8 per day.")
    assert not basis_conflicts("Breakfast is £9 per guest per night.", "Breakfast is £9 per guest.")


def test_round7_opposite_poles_of_readings_plans_frequencies_and_channels():
    from policyengine.signals.alignment import opposites

    assert opposites("We used an estimated reading for March.", "We used the actual reading for March.")
    assert opposites("Priority boarding comes with the Plus fare.", "Priority boarding is an add-on to the Plus fare.")
    assert opposites("Recycling is picked up every second Tuesday.", "Recycling is picked up weekly.")
    assert opposites("Your statement is sent monthly.", "Your statement is sent annually.")
    assert opposites("You can change your PIN in the app.", "To change your PIN, visit a branch with ID.")
    # both poles in one answer: nothing to contradict
    assert not opposites("Pay weekly or every two weeks.", "You can pay weekly.")


# -- round 8 ------------------------------------------------------------------------------


def test_round8_working_days_span_calendar_weeks():
    assert not _spans("Your refund takes 5 working days.", "Your refund takes a week.")
    assert not _spans("Allow 10 working days.", "Allow two weeks.")
    assert _spans("Allow 10 working days.", "Allow a week.") == ["duration"]


def test_round8_caps_channels_and_paraphrases():
    from policyengine.signals.alignment import opposites, substitutions

    assert condition_conflicts("We'll pay for the new tyre.", "We'll pay for the new tyre up to £90.")
    assert opposites("To opt out, reply STOP to this message.", "To opt out, call us on 0800 123 456.")
    assert opposites("Your card has been cancelled.", "Your card has been frozen for now.")
    assert not substitutions("Your statement will be sent on the 5th.", "Your statement goes out on the 5th.")


def test_round8_other_matters_and_withdrawn_threats_are_not_a_dispute():
    s = "I'm appealing the penalty charge notice at the traffic tribunal; can you send the photos of the car park?"
    assert not_a_dispute(s, _starts(s, "tribunal"))
    s = "Please treat my earlier message as withdrawn: I withdraw my earlier threat of court action."
    assert not_a_dispute(s, _starts(s, "court"))
    s = "We were served a subpoena in an unrelated case and must share your invoices."
    assert not_a_dispute(s, _starts(s, "subpoena"))
    s = "Is the moot court open to visitors on Friday?"
    assert not_a_dispute(s, _starts(s, "court"))


def test_round8_replies_that_note_a_referral_are_outbound_and_praise_idioms(provider):
    assert outbound_cue("Thank you for your notice. We note that you have referred your complaint to the ombudsman.")
    assert outbound_cue("The clinic acknowledges receipt of your solicitor's letter.")
    assert provider.sentiment("We note that you have referred the matter to the Financial Ombudsman; we will send "
                              "them our file.") >= 0.3
    assert provider.sentiment("Whoever set up the new booking page deserves a raise. Took two minutes.") >= 0.3


# -- round 9 ---------------------------------------------------------------------------------


def test_round9_pending_minus_off_peak_and_but_clauses_are_conditions():
    assert condition_conflicts("Your claim is accepted.", "Your claim is accepted, pending a surveyor's report.")
    assert condition_conflicts("We'll pay out the deposit within 10 days.",
                               "We'll pay out the deposit within 10 days, minus the cleaning charge.")
    assert condition_conflicts("The pass covers every bus in the city.", "The pass covers every off-peak bus in the city.")
    assert condition_conflicts("Hand luggage is allowed on the shuttle.",
                               "Hand luggage is allowed on the shuttle, but you won't be able to bring a pushchair.")
    assert condition_conflicts("The lockers are free to use.",
                               "The lockers are free to use, but you'll need to bring your own padlock.")
    assert condition_conflicts("The pool is open to children.", "The pool is open to children on Saturdays to Mondays.")
    assert condition_conflicts("Your new card will be sent within 3 days.",
                               "Your new card will be sent within 3 days of approval.")
    # the same condition in both answers is no conflict
    assert not condition_conflicts("Refund approved, pending inspection.", "Your refund is approved, pending inspection.")


def test_round9_a_compound_noun_is_counted():
    assert count_conflicts("Send us three utility bills.", "Send us one utility bill.")
    assert not count_conflicts("Send us two utility bills.", "Please send two utility bills.")


def test_round9_nothing_owed_against_a_further_amount_and_a_zero_balance():
    assert price_conflicts("The council paid £300; you owe nothing more.",
                           "The council paid £300; the other £45 is yours to pay.")
    assert not price_conflicts("The credit brings your balance to £0.", "After the credit you owe nothing; the balance is zero.")


def test_round9_opposite_poles_of_hours_appeals_disposal_and_interest():
    from policyengine.signals.alignment import opposites

    assert opposites("The helpline is open 24 hours.", "The helpline is open 9am to 5pm.")
    assert opposites("The library is staffed until 8pm.", "The library is staffed round the clock.")
    assert opposites("The refusal stands and you may appeal within 14 days.", "The refusal stands; the decision is final.")
    assert opposites("Keep the broken lamp for now.", "Please dispose of the broken lamp.")
    assert opposites("The loan is interest-free.", "The loan is at 6.5% interest.")
    assert opposites("Download your statement.", "We'll post the statement to you.")
    assert not opposites("The helpline is open 24 hours.", "The helpline is open 24/7.")


def test_round9_formats_of_money_codes_and_twelve_hour_ranges():
    assert canonical("The rent is R 8,450.") == "The rent is R8450."
    assert canonical("Rent: R8 450,00") == "Rent: R8450.00"
    assert identifier_conflict("Your order is ab-77120.", "Order number: AB-77120") is None
    from policyengine.signals.checks import extract_times

    assert extract_times("Open 9:00 to 4:30.") == extract_times("Open 09:00-16:30.")
    assert extract_times("From 22:00 to 06:00.") == {"22:00", "06:00"}


def test_round9_a_single_figure_at_a_range_top_is_the_same_bound():
    assert "range" not in _spans("It takes 2-4 working days.", "It takes within four working days.")
    assert "range" in _spans("It takes 2 working days.", "It takes 2 to 4 working days.")


def test_round9_a_decimal_point_does_not_cut_a_sentence():
    from policyengine.signals.negation import _sentences

    assert _sentences("Boarding is now at 6.15pm.") == ["Boarding is now at 6.15pm."]
    assert _sentences("It leaves at 18:15.") == ["It leaves at 18:15."]


def test_round9_a_relations_matter_and_dropped_threats_are_not_a_dispute():
    s = "My sister is suing her employer, not you; I only need copies of my payslips."
    assert not_a_dispute(s, _starts(s, "suing"))
    s = "The hearing for my daughter's case has moved, so can I change the delivery to Friday?"
    assert not_a_dispute(s, _starts(s, "case"))
    s = "Our tenant has filed a claim at the tribunal; as your letting agent we'll send you the papers."
    assert not_a_dispute(s, _starts(s, "tribunal"))
    s = "Forget the solicitors, I just want someone to ring me back."
    assert not_a_dispute(s, _starts(s, "solicitors"))
    s = "I've withdrawn my small claims application now that you've paid."
    assert not_a_dispute(s, _starts(s, "small claims"))
    # a relation who takes the recipient to court is a dispute with the recipient
    s = "My husband is taking you to court over the deposit."
    assert not not_a_dispute(s, _starts(s, "court"))
    s = "My neighbour is suing you as well, and so am I."
    assert not not_a_dispute(s, _starts(s, "suing"))


def test_round9_outbound_formulas_and_sarcastic_thanks(provider):
    assert outbound_cue("Dear student, your library fines of £3.10 are due before the end of term.")
    assert outbound_cue("Hi Tom, we're sorry for the wait: your order ships today.")
    assert outbound_cue("Our records indicate that a claim has been filed; please direct questions to our solicitors.")
    assert outbound_cue("This is your second reminder: the invoice for March is overdue.")
    assert provider.sentiment("Cheers for nothing. Still no refund.") < 0.3
    assert provider.sentiment("Are you seriously charging me twice for one delivery?") < 0.3
