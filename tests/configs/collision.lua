-- The collision test's ORIGINAL order in KEMI (tests/configs/collision.cfg with KEMI):
-- REGISTER: save(); ts_append("location", $tu). INVITE: lookup(); t_relay(); ts_store().

-- Kamailio 6.1's TM no longer matches replies of a transaction that is over (tm modparam
-- reply_matching): the late 487 of a device cancelled after another answered would reach the
-- caller statelessly, after its 200. Earlier versions absorb it in TM; this is right for all.
function ksr_reply_route()
	if KSR.pv.get("$rs") >= 300 and KSR.tm.t_check_trans() < 0 then
		KSR.x.drop()
	end
end

function ksr_request_route()
	local method = KSR.pv.get("$rm")
	if method == "CANCEL" then
		if KSR.tm.t_check_trans() > 0 then
			KSR.tm.t_relay()
		end
		return
	end
	if KSR.siputils.has_totag() > 0 then
		if method == "ACK" and KSR.tm.t_check_trans() > 0 then
			KSR.tm.t_relay()
		end
		return
	end
	if method == "REGISTER" then
		if KSR.registrar.save("location", 0) < 0 then
			KSR.sl.sl_reply_error()
			return
		end
		KSR.tsilo.ts_append("location", KSR.pv.get("$tu"))
		return
	end
	if method ~= "INVITE" then
		KSR.sl.sl_send_reply(405, "Method Not Allowed")
		return
	end
	KSR.tm.t_newtran()
	if KSR.registrar.lookup("location") < 0 then
		KSR.tm.t_reply(404, "Not Found")
		return
	end
	KSR.tm.t_relay()
	KSR.tsilo.ts_store()
end
